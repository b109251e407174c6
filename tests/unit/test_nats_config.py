"""The NATS permissions grant exactly what the Mosquitto ACL grants (issue 17)."""

from __future__ import annotations

from loaxa.broker_config import StationAccount, station_rules
from loaxa.nats_config import MQTT_INTERNAL_SUBJECTS, NatsUser, subject, user_permissions
from loaxa_protocol.station_config import BrokerAddress
from server.api.stations import station_brokers


def test_a_stations_nats_permissions_are_its_mosquitto_acl_rules() -> None:
    areas = ("01273", "04")
    rules = station_rules(StationAccount("st-1", "st-1", "$7$x", areas))
    reads = {subject(r.split()[-1]) for r in rules if r.startswith("topic read ")}
    writes = {subject(r.split()[-1]) for r in rules if r.startswith("topic write ")}
    granted = user_permissions(NatsUser("st-1", "pw", "st-1", areas))
    assert set(granted["subscribe"]) == reads | set(MQTT_INTERNAL_SUBJECTS)
    assert set(granted["publish"]) == writes
    assert "loaxa.v1.station.st-1.plan" in reads and "loaxa.v1.area.04.alert" in reads


def test_topics_map_to_subjects_with_wildcards() -> None:
    assert subject("loaxa/v1/station/+/event") == "loaxa.v1.station.*.event"
    assert subject("loaxa/v1/#") == "loaxa.v1.>"


def test_stations_spread_over_the_nodes_and_keep_the_ring() -> None:
    nodes = [BrokerAddress(host=f"n{i}", port=1883) for i in range(3)]
    lists = {s: station_brokers(s, nodes) for s in (f"st-01273-{i:03}" for i in range(30))}
    assert {lst[0].host for lst in lists.values()} == {"n0", "n1", "n2"}
    for lst in lists.values():
        start = nodes.index(lst[0])
        assert lst == nodes[start:] + nodes[:start]
    assert station_brokers("st-1", nodes[:1]) == nodes[:1]
