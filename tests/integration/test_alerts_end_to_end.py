"""Alerts on real parts: real Mosquitto, the real server on a real port, real station agents.

The broker runs the configuration ``loaxa broker config`` generates: each station signs in
with its own account over TLS and the ACL lets it read only its own topics and its areas'
alert topics, so an alert published where a station may not read it would never arrive.

Stations run the real agent (simulated relay and player: this machine has no sound
card) and hear alerts the way a Pi does: on the alert topics of their areas, verifying
every signature with the province alert key they were registered with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from loaxa.stack import LocalStack, RunningNode
from loaxa_protocol import Alert, SigningKey, seal, topics
from server.alerts.models import AlertDelivery
from server.audit.models import AuditEntry
from server.auth.permissions import Role
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto
from tests.integration.auth_helpers import bearer, make_token

COMMUNES = [("01273", 22.666, 106.257), ("01279", 22.680, 106.230), ("01288", 22.650, 106.270)]
FINAL = {"finished", "failed", "refused", "cancelled"}


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path, production_mosquitto) as running:
        yield running


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_stations(stack: LocalStack) -> list[RunningNode]:
    nodes = []
    for index, (area, lat, lon) in enumerate(COMMUNES):
        config = stack.register_station(f"Cụm loa {index + 1}", area, lat, lon)
        nodes.append(stack.start_node(config))
    # A new station's first plan comes with the next refresh (or broadcast); it carries
    # the canned library in its keep list, cached ahead of need.
    stack.context.publisher.republish_all()
    for node in nodes:
        wait_until(
            lambda n=node: (
                n.agent.core.plan is not None
                and {k.sha256 for k in n.agent.core.plan.keep} <= n.agent.core.cached
            ),
            20,
            f"{node.station_id} to cache the canned library",
        )
    return nodes


def alert_view(stack: LocalStack, alert_pk: int) -> dict[str, Any]:
    with stack.client() as http:
        response = http.get(f"/api/v1/alerts/{alert_pk}")
    response.raise_for_status()
    return dict(response.json())


def wait_for_alert(
    stack: LocalStack, alert_pk: int, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = alert_view(stack, alert_pk)
        if done(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"alert {alert_pk}: {view['state']} {view['stations']}")
        time.sleep(0.1)


def states(view: dict[str, Any]) -> dict[str, str]:
    return {s["station_id"]: s["state"] for s in view["stations"]}


def test_an_alert_preempts_a_bulletin_where_targeted_and_cancel_stops_it(
    stack: LocalStack,
) -> None:
    a, b, c = start_stations(stack)
    bulletin = stack.upload(make_audio("mp3", 20.0), "ban-tin.mp3")
    start_at = datetime.now(UTC) + timedelta(seconds=2)
    programme = stack.broadcast(
        bulletin["id"], start_at, [a.station_id, b.station_id, c.station_id]
    )
    stack.wait_for_states(programme["id"], {"playing"}, timeout=15)

    # A real alert for two communes: the first officer sends, a second one confirms.
    body = {
        "title": "Lũ quét",
        "canned": "flood",
        "tone": True,
        "repeat": 1,
        "area_codes": [COMMUNES[0][0], COMMUNES[1][0]],
    }
    with stack.client() as http:
        created = http.post("/api/v1/alerts", json=body).json()
        assert created["state"] == "awaiting_confirmation"
        second = make_token(stack.context.engine, "duty-officer", (Role.ALERT_OFFICER, "04"))
        sent_at = time.monotonic()
        confirmed = http.post(
            f"/api/v1/alerts/{created['id']}/confirm", headers=bearer(second)
        ).json()
    assert confirmed["state"] == "active"

    view = wait_for_alert(
        stack, created["id"], lambda v: set(states(v).values()) == {"playing"}, timeout=10
    )
    took_ms = (time.monotonic() - sent_at) * 1000
    print(f"confirm → playing on both stations: {took_ms:.0f} ms (LocalStack, 2 cores)")
    assert set(states(view)) == {a.station_id, b.station_id}
    for row in view["stations"]:
        assert row["received_at"] and row["playing_at"] and row["link_status"] == "online"
    # The bulletin was cut where the alert plays, and only there.
    for node in (a, b):
        wait_until(lambda n=node: bool(n.agent.player.records), 5, "the bulletin to stop")
        assert node.agent.player.records[0].interrupted, node.station_id
    assert c.agent.core.current is not None and not c.agent.player.records
    assert stack.broadcast_state(programme["id"])["counts"]["playing"] == 1

    # Cancel: one call, and both stations stop.
    with stack.client() as http:
        cancelled = http.post(f"/api/v1/alerts/{created['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    view = wait_for_alert(
        stack, created["id"], lambda v: set(states(v).values()) <= FINAL, timeout=10
    )
    assert set(states(view).values()) == {"cancelled"}


def test_a_station_offline_during_the_alert_gets_it_on_reconnect(stack: LocalStack) -> None:
    a, _b, c = start_stations(stack)
    c.stop()
    config = c.agent.config
    body = {
        "title": "Cháy rừng",
        "canned": "fire",
        "tone": False,
        "repeat": 1,
        "station_ids": [a.station_id, c.station_id],
        "drill": True,
    }
    with stack.client() as http:
        created = http.post("/api/v1/alerts", json=body).json()
    assert created["drill"] is True and created["state"] == "active"
    view = wait_for_alert(
        stack, created["id"], lambda v: states(v)[a.station_id] == "finished", timeout=15
    )
    assert states(view)[c.station_id] == "pending"
    missing = next(s for s in view["stations"] if s["station_id"] == c.station_id)
    assert missing["link_status"] in {"offline", "stopped"}

    stack.start_node(config)
    view = wait_for_alert(
        stack, created["id"], lambda v: states(v)[c.station_id] == "finished", timeout=20
    )
    assert view["state"] == "finished"
    # What reached it is the server's re-send on its own alert topic (its session is clean:
    # the broker kept nothing for it), which the generated ACL lets it read.
    with Session(stack.context.engine) as session:
        delivery = session.exec(
            select(AlertDelivery)
            .where(AlertDelivery.alert_pk == created["id"])
            .where(AlertDelivery.station_id == c.station_id)
        ).one()
    assert delivery.resent >= 1
    # The server watches its own down-topics: alerts signed by the alert key are its own.
    with Session(stack.context.engine) as session:
        intrusions = session.exec(
            select(AuditEntry).where(AuditEntry.action == "intrusion.detected")
        ).all()
    assert intrusions == []


def test_forged_and_replayed_alerts_are_refused_or_only_re_acked(
    stack: LocalStack, mqtt_probe: Any, production_mosquitto: ProductionMosquitto
) -> None:
    a, _b, c = start_stations(stack)
    commune = COMMUNES[0][0]
    # Only the server's account may write an area topic: the attacker holds a stolen copy.
    probe = mqtt_probe(production_mosquitto, topics=[topics.area_alert(commune)])
    with stack.client() as http:
        created = http.post(
            "/api/v1/alerts",
            json={"title": "Cháy", "canned": "fire", "tone": False, "area_codes": [commune]},
        ).json()
    genuine = probe.wait_for(lambda m: m.topic == topics.area_alert(commune)).payload
    wait_for_alert(stack, created["id"], lambda v: v["state"] == "finished", timeout=20)
    played = len(a.agent.player.records)

    # Forged: the right shape, signed with a key no station trusts.
    now = datetime.now(UTC)
    forged = seal(
        Alert(
            sender="province",
            seq=1,
            issued_at=now,
            expires_at=now + timedelta(hours=1),
            to=f"area:{commune}",
            alert_id="forged-1",
            drill=False,
            audio=a.agent.core.plan.keep[0] if a.agent.core.plan else None,
        ),
        SigningKey.generate("alert", frozenset({"alert", "alert_cancel"})),
    )
    probe.publish(topics.area_alert(commune), forged, qos=1)
    # Replayed: the genuine alert, captured and sent again by someone else.
    probe.publish(topics.area_alert(commune), genuine, qos=1)

    def events(kind: str) -> list[dict[str, Any]]:
        with stack.client() as http:
            found = http.get(f"/api/v1/stations/{a.station_id}/events").json()
        return [e for e in found if e["kind"] == kind]

    def rejections() -> list[dict[str, Any]]:
        return events("rejected")

    wait_until(lambda: len(rejections()) >= 1, 10, "the forged alert to be refused")
    assert rejections()[0]["reason"] == "unknown_key"
    wait_until(lambda: len(events("alert_received")) == 2, 10, "the replayed copy re-acked")
    time.sleep(0.5)  # give the replayed copy time to (not) play
    assert len(a.agent.player.records) == played, "a replayed alert must not play again"
    assert not c.agent.player.records
    view = alert_view(stack, created["id"])
    assert states(view)[a.station_id] == "finished"  # the re-ack changes nothing
    with Session(stack.context.engine) as session:
        intrusions = session.exec(
            select(AuditEntry).where(AuditEntry.action == "intrusion.detected")
        ).all()
    # The forged one is an intrusion; a byte-identical copy of our own recent alert looks
    # like the broker's QoS 1 redelivery to the watch, and stations only re-ack it.
    assert len(intrusions) == 1 and "unknown_key" in (intrusions[0].after or "")
