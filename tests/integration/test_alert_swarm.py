"""Emergency alerts end to end: real Mosquitto, the real server, 60 simulated stations.

The broker runs the configuration ``loaxa broker config`` generates, re-generated from the
server's database once the 60 stations are registered: each station signs in with its own
account and the ACL confines it to its own topics and its areas' alert topics, so a
re-send on a station's own alert topic is delivered only if the ACL lets it read it.
The swarm dials the plain loopback listener rather than TLS (60 handshakes on a shared
2-core machine buy nothing the TLS end-to-end tests do not already prove); accounts and
ACL are the same on both listeners.

Each station is the alert swarm's (:mod:`loaxa.bench.alert_swarm`): its own MQTT connection
and credentials from ``POST /api/v1/stations``, subscribed to its alert topics, running
the real node core (every signature checked) with an instant relay and a timer player.
Stations sit in three Cao Bằng communes, 20 each. What a province officer checks is
asserted twice: from the stations (their players' records and the acks their cores
emitted) and from the server's own view (``GET /api/v1/alerts/{id}``).

One fleet serves the whole module (60 registrations and connections cost seconds); every
test targets its own communes or stations and cancels what it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loaxa.bench.alert import library_sha256s
from loaxa.bench.alert_swarm import AlertSwarm, Mark, NodeProfile, SimStation
from loaxa.stack import LocalStack
from loaxa_protocol import Alert, Keyring, SigningKey, open_envelope, seal, topics
from tests.audio_samples import make_audio
from tests.brokers import MqttProbe, ProductionMosquitto, running_production_mosquitto

COMMUNES = ("01273", "01279", "01288")
PER_COMMUNE = 20
BULLETIN_S = 40.0


@dataclass
class Fleet:
    broker: ProductionMosquitto
    stack: LocalStack
    swarm: AlertSwarm
    by_commune: dict[str, list[str]]
    keys: list[dict[str, Any]]
    marks: list[Mark] = field(default_factory=list)

    @property
    def all_ids(self) -> list[str]:
        return [sid for ids in self.by_commune.values() for sid in ids]

    def pull(self) -> None:
        collected = self.swarm.collect()
        assert not collected.errors, collected.errors
        self.marks += collected.marks

    def marks_of(self, alert_id: str, kind: str) -> dict[str, list[Mark]]:
        found: dict[str, list[Mark]] = {}
        for mark in self.marks:
            if mark.alert_id == alert_id and mark.kind == kind:
                found.setdefault(mark.station_id, []).append(mark)
        return found

    def wait_marks(
        self, alert_id: str, kind: str, station_ids: list[str], timeout: float = 10.0
    ) -> dict[str, list[Mark]]:
        """Until every station in ``station_ids`` emitted ``kind`` for ``alert_id``."""
        deadline = time.monotonic() + timeout
        while True:
            self.pull()
            found = self.marks_of(alert_id, kind)
            missing = sorted(set(station_ids) - set(found))
            if not missing:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing)} station(s) never emitted {kind} for {alert_id} within "
                    f"{timeout} s: {missing[:5]}"
                )
            time.sleep(0.2)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.stack.client() as http:
            response = http.request(method, f"/api/v1{path}", **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def send(self, **body: Any) -> dict[str, Any]:
        body.setdefault("title", "Cảnh báo thử")
        body.setdefault("severity", "extreme")
        alert: dict[str, Any] = self.api("POST", "/alerts", json=body)
        assert alert["state"] == "active", alert  # one commune: no second officer needed
        return alert

    def wait_alert(
        self, alert_pk: int, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the server's view of an alert until ``done`` holds; return it."""
        deadline = time.monotonic() + timeout
        while True:
            detail: dict[str, Any] = self.api("GET", f"/alerts/{alert_pk}")
            if done(detail):
                return detail
            if time.monotonic() > deadline:
                rows = {s["station_id"]: s["state"] for s in detail["stations"]}
                raise AssertionError(f"alert {alert_pk} ({detail['state']}): {rows}")
            time.sleep(0.2)


def _states(detail: dict[str, Any]) -> dict[str, str]:
    return {row["station_id"]: row["state"] for row in detail["stations"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp: Path = tmp_path_factory.mktemp("alert-swarm")
    with (
        running_production_mosquitto(tmp / "broker") as broker,
        LocalStack.on_broker(tmp / "stack", broker) as stack,
    ):
        by_commune: dict[str, list[str]] = {}
        stations: list[SimStation] = []
        keys: list[dict[str, Any]] = []
        with stack.registering():  # one broker reload for the 60, when the block ends
            for commune in COMMUNES:
                for number in range(PER_COMMUNE):
                    config = stack.register_station(
                        f"Cụm loa {commune}-{number}", commune, 22.6, 106.2 + number / 1000
                    )
                    stations.append(
                        SimStation(
                            config.station_id,
                            config.mqtt.username,
                            config.mqtt.password,
                            tuple(config.areas),
                        )
                    )
                    by_commune.setdefault(commune, []).append(config.station_id)
                    keys = [k.model_dump(mode="json") for k in config.trusted_keys]
        profile = NodeProfile(trusted_keys=tuple(keys), cached_audio=library_sha256s(stack))
        with AlertSwarm(broker.host, broker.port, stations, profile, workers=2) as swarm:
            ready = swarm.start(timeout_s=30)
            assert ready.connected == len(stations), ready
            yield Fleet(broker, stack, swarm, by_commune, keys)


def _bulletin_item(history: list[tuple[str, str, float]]) -> str | None:
    started = [item for what, item, _at in history if what == "started"]
    return next((item for item in started if not item.startswith("alert:")), None)


def test_an_alert_preempts_the_bulletin_on_every_targeted_station_only_and_cancel_stops_it(
    fleet: Fleet,
) -> None:
    audio = fleet.stack.upload(make_audio("mp3", BULLETIN_S), "ban-tin-dai.mp3")
    start_at = datetime.now(UTC) + timedelta(seconds=4)
    broadcast = fleet.stack.broadcast(audio["id"], start_at, fleet.all_ids)
    deadline = time.monotonic() + 20
    while True:
        history = fleet.swarm.history(fleet.all_ids)
        if all(_bulletin_item(h) for h in history.values()):
            break
        assert time.monotonic() < deadline, "the bulletin did not start on every station"
        time.sleep(0.2)
    bulletin = {sid: _bulletin_item(h) for sid, h in history.items()}

    target, others = COMMUNES[0], [sid for c in COMMUNES[1:] for sid in fleet.by_commune[c]]
    targeted = fleet.by_commune[target]
    alert = fleet.send(canned="flood", area_codes=[target], repeat=2, gap_s=1)
    wire_id = alert["alert_id"]
    fleet.wait_marks(wire_id, "alert_received", targeted)
    fleet.wait_marks(wire_id, "alert_playing", targeted)

    history = fleet.swarm.history(fleet.all_ids)
    for sid in targeted:
        record = [(what, item) for what, item, _at in history[sid]]
        assert ("stopped", bulletin[sid]) in record, record
        assert ("started", f"alert:{wire_id}#0") in record, record
        stop = record.index(("stopped", bulletin[sid]))
        assert stop < record.index(("started", f"alert:{wire_id}#0")), record
    for sid in others:
        record = [(what, item) for what, item, _at in history[sid]]
        assert record[-1] == ("started", bulletin[sid]), record  # still on the bulletin
    fleet.pull()
    assert not {m.station_id for m in fleet.marks if m.alert_id == wire_id} - set(targeted)

    detail = fleet.wait_alert(
        alert["id"], lambda d: set(_states(d).values()) == {"playing"} and len(d["stations"]) == 20
    )
    assert set(_states(detail)) == set(targeted)
    assert detail["drill"] is False and detail["payload"] == "canned"
    deadline = time.monotonic() + 10
    while True:  # the server takes in 60 stations' reports in its own time
        view = fleet.stack.broadcast_state(broadcast["id"])
        by_station = {t["station_id"]: t["state"] for t in view["targets"]}
        if {by_station[sid] for sid in others} == {"playing"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {by_station[sid] for sid in others} == {"playing"}, by_station
    assert "playing" not in {by_station[sid] for sid in targeted}, by_station

    cancelled = fleet.api("POST", f"/alerts/{alert['id']}/cancel")
    assert cancelled["state"] == "cancelled"
    fleet.wait_marks(wire_id, "alert_cancelled", targeted)
    history = fleet.swarm.history(targeted)
    for sid in targeted:
        playing_parts = {
            item for what, item, _at in history[sid] if item.startswith(f"alert:{wire_id}#")
        }
        stops = {item for what, item, _at in history[sid] if what == "stopped"}
        assert playing_parts <= stops | {
            item for what, item, _at in history[sid] if what == "finished"
        }, history[sid]
    detail = fleet.wait_alert(alert["id"], lambda d: set(_states(d).values()) == {"cancelled"})
    assert detail["state"] == "cancelled"


def test_a_station_offline_during_an_alert_gets_it_on_reconnect_unless_expired(
    fleet: Fleet,
) -> None:
    commune_b, commune_c = COMMUNES[1], COMMUNES[2]
    late_ones = fleet.by_commune[commune_b][:2]
    too_late = fleet.by_commune[commune_c][:1]
    fleet.swarm.offline([*late_ones, *too_late])
    time.sleep(0.5)  # the broker has published their last wills

    lasting = fleet.send(canned="typhoon", area_codes=[commune_b], repeat=1)
    brief = fleet.send(
        canned="fire",
        area_codes=[commune_c],
        repeat=1,
        expires_at=(datetime.now(UTC) + timedelta(seconds=4)).isoformat(),
    )
    online_b = fleet.by_commune[commune_b][2:]
    online_c = fleet.by_commune[commune_c][1:]
    fleet.wait_marks(lasting["alert_id"], "alert_playing", online_b)
    fleet.wait_marks(brief["alert_id"], "alert_playing", online_c)
    assert not fleet.marks_of(lasting["alert_id"], "alert_received").keys() & set(late_ones)

    fleet.swarm.online(late_ones)
    fleet.wait_marks(lasting["alert_id"], "alert_playing", late_ones, timeout=15)
    detail = fleet.wait_alert(
        lasting["id"], lambda d: {_states(d)[sid] for sid in late_ones} == {"playing"}
    )
    assert detail["state"] == "active"

    expires = datetime.fromisoformat(brief["expires_at"])
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    fleet.swarm.online(too_late)
    time.sleep(4)  # time for a (wrong) re-send to arrive and play
    fleet.pull()
    assert too_late[0] not in fleet.marks_of(brief["alert_id"], "alert_playing")
    assert _states(fleet.api("GET", f"/alerts/{brief['id']}"))[too_late[0]] not in {
        "received",
        "playing",
        "finished",
    }
    history = fleet.swarm.history(too_late)[too_late[0]]
    assert not [item for _w, item, _at in history if item.startswith(f"alert:{brief['alert_id']}")]

    fleet.api("POST", f"/alerts/{lasting['id']}/cancel")
    fleet.wait_marks(lasting["alert_id"], "alert_cancelled", fleet.by_commune[commune_b])


def _forged_copy(genuine: Alert, keys: list[dict[str, Any]]) -> bytes:
    """The same alert re-addressed and signed by an impostor under the province key's id."""
    kid = next(k["kid"] for k in keys if "alert" in k["purposes"])
    impostor = SigningKey(kid, Ed25519PrivateKey.generate(), frozenset({"alert", "alert_cancel"}))
    forged = genuine.model_copy(
        update={
            "alert_id": "forged-1",
            "seq": genuine.seq + 1,
            "issued_at": datetime.now(UTC),
            "expires_at": datetime.now(UTC) + timedelta(minutes=30),
            "drill": False,
        }
    )
    return seal(forged, impostor)


def test_forged_and_replayed_alerts_are_refused_and_reported(fleet: Fleet) -> None:
    commune = COMMUNES[0]
    targeted = fleet.by_commune[commune]
    with MqttProbe(fleet.broker, topics.area_alert(commune)) as wire:
        alert = fleet.send(
            canned="epidemic",
            area_codes=[commune],
            repeat=1,
            expires_at=(datetime.now(UTC) + timedelta(seconds=5)).isoformat(),
        )
        captured = wire.wait_for(lambda m: alert["alert_id"].encode() in _payload_of(m.payload))
    wire_id = alert["alert_id"]
    raw = captured.payload
    fleet.wait_marks(wire_id, "alert_playing", targeted)

    keyring = Keyring.from_entries([])
    for key in fleet.keys:
        keyring.add(key["kid"], key["public_key"], set(key["purposes"]))
    verdict = open_envelope(raw, keyring, datetime.now(UTC), {f"area:{commune}"})
    genuine = verdict.message  # type: ignore[union-attr]
    assert isinstance(genuine, Alert)

    with MqttProbe(fleet.broker, "unused/probe") as attacker:
        # A copy of an alert still running: acknowledged again, never played twice.
        attacker.publish(topics.area_alert(commune), raw)
        deadline = time.monotonic() + 10
        while any(len(v) < 2 for v in _received_twice(fleet, wire_id, targeted)):
            assert time.monotonic() < deadline, "not every station re-acked the copy"
            time.sleep(0.2)
            fleet.pull()

        # The recording played back after the alert expired: refused, reported.
        expires = genuine.expires_at
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.3)
        attacker.publish(topics.area_alert(commune), raw)
        refused = _wait_rejected(fleet, targeted, lambda m: m.alert_id == wire_id)
        assert {m.reason for m in refused.values()} == {"expired"}

        # The same alert signed by a key the stations do not hold: refused, reported.
        attacker.publish(topics.area_alert(commune), _forged_copy(genuine, fleet.keys))
        forged = _wait_rejected(fleet, targeted, lambda m: m.reason == "bad_signature")
        assert {m.alert_id for m in forged.values()} == {""}  # nothing of it is trusted

    history = fleet.swarm.history(targeted)
    for sid in targeted:
        starts = [item for what, item, _at in history[sid] if what == "started"]
        assert starts.count(f"alert:{wire_id}#0") == 1, starts
        assert not [item for item in starts if "forged" in item]
    events = fleet.api("GET", f"/stations/{targeted[0]}/events", params={"kind": "rejected"})
    assert {"expired", "bad_signature"} <= {e["reason"] for e in events}


def _payload_of(raw: bytes) -> bytes:
    import base64
    import json

    text = json.loads(raw)["payload"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _received_twice(fleet: Fleet, alert_id: str, station_ids: list[str]) -> list[list[Mark]]:
    found = fleet.marks_of(alert_id, "alert_received")
    return [found.get(sid, []) for sid in station_ids]


def _wait_rejected(
    fleet: Fleet, station_ids: list[str], which: Callable[[Mark], bool], timeout: float = 10.0
) -> dict[str, Mark]:
    deadline = time.monotonic() + timeout
    while True:
        fleet.pull()
        found = {
            m.station_id: m
            for m in fleet.marks
            if m.kind == "rejected" and m.station_id in station_ids and which(m)
        }
        if len(found) == len(station_ids):
            return found
        assert time.monotonic() < deadline, f"only {sorted(found)} reported the refusal"
        time.sleep(0.2)
