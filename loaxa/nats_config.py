"""A NATS server configuration for one node of a clustered MQTT broker (issue 17).

NATS (``nats-server`` 2.9+) speaks MQTT 3.1.1 on a listener of its own and keeps
retained messages and QoS 1 sessions in JetStream, which a three-node cluster
replicates: a node can die and the others still hold every retained plan and every
unacknowledged alert. Stations and the server's fleet link use MQTT 3.1.1 (paho's
default), so they work on it unchanged; the ingest workers (MQTT 5 shared
subscriptions) do not: NATS has no MQTT 5, so they stay on Mosquitto.

The permissions are derived from :data:`loaxa_protocol.topics.TOPICS` exactly as the
Mosquitto ACL is (:func:`loaxa.broker_config.station_rules`): a station may read its own
down-topics and its areas' alert topics and write its own up-topics, nothing else. MQTT
topics map to NATS subjects with ``/`` → ``.``, ``+`` → ``*``, ``#`` → ``>``.

NATS cannot check Mosquitto's ``$7$`` (PBKDF2) hashes the server stores, so this writer
takes passwords as NATS accepts them (plain text, or a bcrypt ``$2a$`` hash made with
``nats server passwd``); see docs/architecture.md ("Clustered broker").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from loaxa_protocol import topics
from loaxa_protocol.topics import Direction

MQTT_INTERNAL_SUBJECTS = ("$MQTT.sub.>",)
"""Where NATS delivers a QoS 1 subscription's JetStream messages to the MQTT client."""


@dataclass(frozen=True)
class NatsUser:
    """One MQTT account on NATS: a station (``area_codes`` set) or the server (``None``)."""

    username: str
    password: str
    """Plain text or a bcrypt hash (``$2a$…``), as nats-server accepts."""
    station_id: str | None = None
    area_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NatsNode:
    """Where one node of the cluster listens."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    store_dir: str
    host: str = "127.0.0.1"


def subject(topic: str) -> str:
    """The NATS subject an MQTT topic or filter is delivered on."""
    return topic.replace("/", ".").replace("+", "*").replace("#", ">")


def user_permissions(user: NatsUser) -> dict[str, list[str]]:
    """The NATS publish/subscribe allow-lists equivalent to the Mosquitto ACL."""
    if user.station_id is None:  # the server: the whole Loaxa tree
        everything = [subject(f"{topics.ROOT}/#")]
        return {"publish": everything, "subscribe": [*everything, *MQTT_INTERNAL_SUBJECTS]}
    own, areas = user.station_id, sorted(user.area_codes)
    reads = [
        *(subject(t.of(own)) for t in topics.of_direction(Direction.DOWN)),
        *(subject(t.of(a)) for a in areas for t in topics.of_direction(Direction.AREA)),
    ]
    writes = [subject(t.of(own)) for t in topics.of_direction(Direction.UP)]
    return {"publish": writes, "subscribe": [*reads, *MQTT_INTERNAL_SUBJECTS]}


def nats_conf_text(node: NatsNode, cluster: Sequence[NatsNode], users: Sequence[NatsUser]) -> str:
    """The configuration of ``node`` in a cluster of ``cluster`` (which includes it).

    JSON values are valid NATS configuration syntax, so every name and password is
    quoted by :func:`json.dumps` and cannot break out of its string.
    """
    routes = [f"nats-route://{n.host}:{n.cluster_port}" for n in cluster if n != node]
    accounts = [
        {"user": u.username, "password": u.password, "permissions": user_permissions(u)}
        for u in users
    ]
    lines = [
        "# Generated for a Loaxa broker cluster node; see loaxa/nats_config.py.",
        f"server_name: {json.dumps(node.name)}",
        f"listen: {json.dumps(f'{node.host}:{node.client_port}')}",
        f"jetstream {{ store_dir: {json.dumps(node.store_dir)} }}",
        "cluster {",
        '  name: "loaxa"',
        f"  listen: {json.dumps(f'{node.host}:{node.cluster_port}')}",
        f"  routes: {json.dumps(routes)}",
        "}",
        "mqtt {",
        f"  listen: {json.dumps(f'{node.host}:{node.mqtt_port}')}",
        # A station's QoS 1 alert that is not acknowledged is sent again this soon.
        '  ack_wait: "10s"',
        # Retained messages and sessions on every node: one node may die without a loss
        # (the default picks fewer replicas when the first MQTT client comes before
        # every route is up, and a replica set of two loses its quorum with one node).
        f"  stream_replicas: {len(cluster)}",
        # Consumers (one per subscription) keep the stream's replicas: with one replica
        # the server's persistent session lost its subscriptions with the node that held
        # them, and no station event reached it any more (measured, see
        # docs/architecture.md "Clustered broker").
        "}",
        f"authorization {{ users: {json.dumps(accounts)} }}",
    ]
    return "\n".join(lines) + "\n"
