"""Live from the microphone, on real parts: an operator's session through the real server,
a real Mosquitto on the production config, and three real station agents that verify
every frame and play it; a forged or replayed frame on the broker raises the alarm."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from loaxa.bench.live import LiveSender
from loaxa.stack import LocalStack, RunningNode
from loaxa_protocol import topics
from loaxa_protocol.live import Frame, pack
from node_firmware.drivers.live_output import SimulatedLiveSink
from server.audit.models import AuditEntry
from server.live.models import LiveSession
from server.models import AudioAsset
from tests.brokers import ProductionMosquitto

COMMUNE = "01273"
OTHER_COMMUNE = "01279"
PASSWORD = "nói-trực-tiếp-2026"


def wait_until(check: Callable[[], Any], timeout_s: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@contextmanager
def stations_on_air(
    tmp_path: Path, broker: ProductionMosquitto, count: int, operator: str = ""
) -> Iterator[tuple[LocalStack, list[RunningNode]]]:
    """The server, ``count`` real station agents in one commune, online, and its operator
    ``op`` (named ``operator`` on the pages when given)."""
    with LocalStack.on_broker(tmp_path, broker) as stack:
        with stack.registering():
            configs = [
                stack.register_station(f"Cụm loa {n}", COMMUNE, 22.66, 106.25 + n / 100)
                for n in range(count)
            ]
        stack.admit_registered()
        nodes = [stack.start_node(config) for config in configs]
        wait_until(lambda: all(n.agent.core.connected for n in nodes), what="stations online")
        stack.create_user("op", PASSWORD, [("commune_operator", COMMUNE)], operator)
        yield stack, nodes


@pytest.fixture
def on_air(
    tmp_path: Path, production_mosquitto: ProductionMosquitto
) -> Iterator[tuple[LocalStack, list[RunningNode]]]:
    with stations_on_air(tmp_path, production_mosquitto, 3) as running:
        yield running


def go_live(stack: LocalStack, http: Any, targets: dict[str, list[str]]) -> dict[str, Any]:
    created = http.post("/api/v1/live/sessions", json={"targets": targets, "title": "Họp"})
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_an_operator_goes_live_and_three_real_stations_play_it(on_air) -> None:
    stack, nodes = on_air
    with stack.sign_in("op", PASSWORD) as http:
        body = go_live(stack, http, {"areas": [COMMUNE]})
        assert sorted(body["station_ids"]) == sorted(n.station_id for n in nodes)
        sent = LiveSender(stack.base_url, body["id"], body["token"]).run(4.0)
        time.sleep(0.5)
    warmup_frames = body["warmup_ms"] // 60
    for node in nodes:
        sink = node.agent.live.sink
        assert isinstance(sink, SimulatedLiveSink)
        played = [s.seq for s in sink.sounds if s.seq is not None]
        # every frame after the amplifier's warm-up sounded, in order, with no gap
        assert played == sorted(played) and len(played) >= sent.frames - warmup_frames - 4
        assert sink.gaps == 0
        latencies = [s.at_s * 1000 - s.capture_ms for s in sink.sounds if s.capture_ms]
        assert max(latencies) < 1500
        # amplifier: on for the session, off after it
        history = wait_until(lambda n=node: [on for *_, on in n.agent.board.history][-2:])
        assert history == [True, False] or wait_until(
            lambda n=node: [on for *_, on in n.agent.board.history][-1] is False
        )

    def as_run() -> dict[str, Any] | None:
        with stack.client() as http:
            view = http.get(f"/api/v1/live/sessions/{body['id']}").json()
        ended = [s for s, ev in view["as_run"].items() if ev[-1]["kind"] == "live_ended"]
        return view if len(ended) == 3 and view["audio_id"] else None

    view = wait_until(as_run, 30, "as-run of every station and the archive")
    assert view["end_reason"] == "stopped" and view["frames"] == sent.frames
    for events in view["as_run"].values():
        assert [e["kind"] for e in events] == ["live_started", "live_ended"]
        assert events[-1]["reason"] == "stopped"
    with Session(stack.context.engine) as session:
        asset = session.get(AudioAsset, view["audio_id"])
        assert asset is not None and 3000 <= asset.duration_ms <= 5000
        row = session.get(LiveSession, body["id"])
        assert row is not None and row.created_by.startswith("op")
    assert stack.context.ingestor.intrusions == 0  # our own starts, stops and frames


def test_only_an_operator_of_the_area_may_go_live(on_air) -> None:
    stack, nodes = on_air
    stack.create_user("other", PASSWORD, [("commune_operator", OTHER_COMMUNE)])
    stack.create_user("tech", PASSWORD, [("technician", COMMUNE)])
    for user in ("other", "tech"):
        with stack.sign_in(user, PASSWORD) as http:
            refused = http.post(
                "/api/v1/live/sessions", json={"targets": {"stations": [nodes[0].station_id]}}
            )
            assert refused.status_code == 403, refused.text
    with stack.sign_in("op", PASSWORD) as http:
        body = go_live(stack, http, {"stations": [nodes[0].station_id]})
        busy = http.post(
            "/api/v1/live/sessions", json={"targets": {"stations": [nodes[0].station_id]}}
        )
        assert busy.status_code == 409 and "already on air" in busy.text
    # the token is one-time: a second socket is refused
    url = stack.base_url.replace("http", "ws", 1) + f"/api/v1/live/sessions/{body['id']}/ws"
    with connect(f"{url}?token={body['token']}", open_timeout=10) as first:
        with (
            pytest.raises((InvalidStatus, WebSocketException)),
            connect(f"{url}?token={body['token']}", open_timeout=10) as second,
        ):
            second.recv(timeout=5)
        first.send("stop")


def test_forged_and_replayed_frames_on_the_broker_are_refused_and_raise_the_alarm(
    on_air, mqtt_probe: Any, production_mosquitto: ProductionMosquitto
) -> None:
    stack, nodes = on_air
    target = nodes[0]
    topic = topics.live(target.station_id)
    # the attacker holds the server's broker credentials and records the live topic
    attacker = mqtt_probe(production_mosquitto, topics=[topic])
    with stack.sign_in("op", PASSWORD) as http:
        body = go_live(stack, http, {"stations": [target.station_id]})
    sender = LiveSender(stack.base_url, body["id"], body["token"])
    sender.run(2.5)
    captured = attacker.wait_for(lambda m: m.topic == topic and m.payload[:1] == b"\x01")
    sink = target.agent.live.sink
    assert isinstance(sink, SimulatedLiveSink)
    sink.reset()
    with stack.sign_in("op", PASSWORD) as http:
        second = go_live(stack, http, {"stations": [target.station_id]})
    forged = pack(Frame(second["id"], 10_000, 0, 2880, b"\xf8evil"), secrets.token_bytes(32))
    client = attacker.client
    speaking = threading.Thread(
        target=LiveSender(stack.base_url, second["id"], second["token"]).run, args=(3.0,)
    )
    speaking.start()
    core = target.agent.core
    wait_until(lambda: core.live is not None and core.live.session_id == second["id"])
    client.publish(topic, forged, qos=0)
    client.publish(topic, captured.payload, qos=0)  # a frame of the earlier session
    speaking.join()

    def alarms() -> list[AuditEntry]:
        with Session(stack.context.engine) as session:
            query = select(AuditEntry).where(AuditEntry.action == "intrusion.detected")
            return list(session.exec(query.order_by(col(AuditEntry.id))).all())

    found = wait_until(lambda: len(alarms()) >= 2 and alarms(), what="two intrusion alarms")
    reasons = sorted(json.loads(entry.after or "{}")["reason"] for entry in found)
    assert reasons == ["live_bad_tag", "live_replayed"]
    assert all(entry.object_id == target.station_id for entry in found)
    assert not any(s.seq == 10_000 for s in sink.sounds)  # the forged frame never sounded
    assert stack.context.ingestor.intrusions >= 2
