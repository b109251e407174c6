"""Versioned MQTT topic names, declared once in :data:`TOPICS`.

Down-topics (server → station) carry signed envelopes; up-topics (station → server)
carry plain JSON authenticated by the station's own broker credentials and confined
by its ACL to its own prefix; area topics (server → every station in an area's
subtree) carry signed envelopes too.

:data:`TOPICS` is the one list of every topic with its direction. The broker ACL
(``loaxa broker config``, :func:`loaxa.broker_config.acl_text`) is derived from it, so a
topic added here is granted to its owner, and only to its owner, without anyone having
to remember the ACL; tests/integration/test_topic_acl.py proves that against a real
Mosquitto. Every topic function below must name its entry of the table
(tests/unit/test_topics.py fails otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ROOT = "loaxa/v1"


class Direction(StrEnum):
    """Who publishes on a topic and who reads it."""

    DOWN = "down"
    """server → one station, on that station's own topic; only that station reads it"""
    UP = "up"
    """one station → server, on the station's own topic; only that station writes it"""
    AREA = "area"
    """server → every station whose area or ancestor is the area named in the topic"""


@dataclass(frozen=True)
class Topic:
    """One entry of the topic table: a leaf under a station's or an area's prefix."""

    leaf: str
    direction: Direction
    function: str
    """the name of this module's function that builds it (``plan``, ``area_alert``…)"""

    @property
    def scope(self) -> str:
        """``station`` or ``area``: what the id in the topic names."""
        return "area" if self.direction is Direction.AREA else "station"

    def of(self, owner: str) -> str:
        """The topic of one station (station id) or one area (area code)."""
        if not owner or any(c in owner for c in "/+#"):
            kind = "area code" if self.scope == "area" else "station id"
            raise ValueError(f"{kind} {owner!r} cannot be used in a topic")
        return f"{ROOT}/{self.scope}/{owner}/{self.leaf}"

    @property
    def every(self) -> str:
        """The subscription filter matching this topic of every station or area."""
        return f"{ROOT}/{self.scope}/+/{self.leaf}"


PLAN = Topic("plan", Direction.DOWN, "plan")
COMMAND = Topic("cmd", Direction.DOWN, "command")
TRUST = Topic("trust", Direction.DOWN, "trust")
ALERT = Topic("alert", Direction.DOWN, "alert")
STATUS = Topic("status", Direction.UP, "status")
EVENT = Topic("event", Direction.UP, "event")
HEALTH = Topic("health", Direction.UP, "health")
REPLY = Topic("reply", Direction.UP, "reply")
LIVE = Topic("live", Direction.DOWN, "live")
AREA_ALERT = Topic("alert", Direction.AREA, "area_alert")

TOPICS: tuple[Topic, ...] = (
    PLAN,
    COMMAND,
    TRUST,
    ALERT,
    LIVE,
    EVENT,
    HEALTH,
    STATUS,
    REPLY,
    AREA_ALERT,
)
"""Every topic of the protocol. Add a topic here, or the broker refuses it."""


def of_direction(direction: Direction) -> tuple[Topic, ...]:
    return tuple(topic for topic in TOPICS if topic.direction is direction)


def plan(station_id: str) -> str:
    """Retained, signed: the station's whole current plan."""
    return PLAN.of(station_id)


def command(station_id: str) -> str:
    """Signed one-shot commands to one station (not retained)."""
    return COMMAND.of(station_id)


def trust(station_id: str) -> str:
    """Retained, signed: the complete set of keys the station trusts."""
    return TRUST.of(station_id)


def status(station_id: str) -> str:
    """Retained availability: online / offline (last will) / stopped."""
    return STATUS.of(station_id)


def event(station_id: str) -> str:
    """Delivery, playback and rejection events, QoS 1."""
    return EVENT.of(station_id)


def health(station_id: str) -> str:
    """Periodic heartbeat with basic health, QoS 0."""
    return HEALTH.of(station_id)


def reply(station_id: str) -> str:
    """Answers to commands, QoS 1."""
    return REPLY.of(station_id)


def alert(station_id: str) -> str:
    """Signed alerts and cancels for one station (re-sends, station targets), QoS 1."""
    return ALERT.of(station_id)


def live(station_id: str) -> str:
    """A live session to one station: its signed start and stop (QoS 1, retained) and
    its authenticated audio frames (QoS 0), on one topic so they arrive in order."""
    return LIVE.of(station_id)


def area_alert(area_code: str) -> str:
    """Signed alerts and cancels for every station in an area's subtree, QoS 1.

    A station subscribes to the alert topic of each area it lies in (commune, district,
    province), so one publish reaches the whole area through the broker's fan-out.
    """
    return AREA_ALERT.of(area_code)


ALL_AREA_ALERTS = AREA_ALERT.every
ALL_REPLIES = REPLY.every
ALL_STATUS = STATUS.every
ALL_EVENTS = EVENT.every
ALL_HEALTH = HEALTH.every

BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"
"""Mosquitto's count of messages it dropped because a client's queue was full (published
retained every ``sys_interval``). Outside the Loaxa tree: only the server may read it."""


def station_of(topic: str) -> str | None:
    """The station id named by a station topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:2]) == ROOT and parts[2] == "station":
        return parts[3]
    return None


def leaf_of(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]
