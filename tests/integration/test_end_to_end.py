"""A bulletin from upload to loudspeaker on real parts.

Real Mosquitto (started by the test on free ports) running the configuration
``loaxa broker config`` generates — every station signs in with its own account over TLS
and the ACL confines it to its own topics — the real server on a real HTTP port, real
ffmpeg, stations running the real agent with a simulated relay board on a
pseudo-terminal and the simulated player (this machine has no sound card).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from loaxa.stack import LocalStack, RunningNode
from loaxa_protocol import Plan, Priority, SigningKey, seal, topics
from node_firmware.agent import NodeAgent
from node_firmware.drivers.state_store import StateStore
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto

COMMUNES = [("01273", 22.666, 106.257), ("01279", 22.680, 106.230), ("01288", 22.650, 106.270)]


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path, production_mosquitto) as running:
        yield running


def start_stations(stack: LocalStack, count: int = 3) -> list[RunningNode]:
    nodes = []
    for index, (area, lat, lon) in enumerate(COMMUNES[:count]):
        config = stack.register_station(f"Cụm loa {index + 1}", area, lat, lon)
        nodes.append(stack.start_node(config))
    return nodes


def upload_bulletin(stack: LocalStack, seconds: float = 2.0) -> dict:
    return stack.upload(make_audio("mp3", seconds), "ban-tin.mp3")


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def events_of(stack: LocalStack, station_id: str) -> list[dict]:
    with stack.client() as http:
        response = http.get(f"/api/v1/stations/{station_id}/events")
    response.raise_for_status()
    return list(response.json())


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_three_stations_play_a_bulletin_together(stack: LocalStack) -> None:
    nodes = start_stations(stack)
    audio = upload_bulletin(stack)
    start_at = datetime.now(UTC) + timedelta(seconds=3)
    broadcast = stack.broadcast(audio["id"], start_at, [n.station_id for n in nodes])

    view = stack.wait_for_states(broadcast["id"], {"played", "failed"}, timeout=30)
    assert {t["state"] for t in view["targets"]} == {"played"}, view["targets"]
    for target in view["targets"]:
        started, finished = iso(target["started_at"]), iso(target["finished_at"])
        assert abs((started - start_at).total_seconds()) < 0.05
        assert (finished - started).total_seconds() == pytest.approx(
            audio["duration_ms"] / 1000, abs=0.1
        )
        assert target["delivered_at"] and target["fetched_at"]

    starts = [n.agent.player.records[0].started_at for n in nodes]
    skew_ms = (max(starts) - min(starts)).total_seconds() * 1000
    print(f"start skew across 3 stations: {skew_ms:.3f} ms")
    assert skew_ms < 20

    for node in nodes:
        board = node.agent.board
        wait_until(lambda b=board: len(b.history) == 3, 5, "the amplifier to switch off")
        record = node.agent.player.records[0]
        history = [(datetime.fromtimestamp(t, UTC), on) for t, _ch, on in node.agent.board.history]
        assert [on for _, on in history] == [False, True, False], history  # boot, on, off
        (_, _), (on_at, _), (off_at, _) = history
        assert on_at <= record.started_at - timedelta(milliseconds=1000)
        assert off_at >= record.finished_at


def test_forged_replayed_and_misaddressed_plans_are_refused_and_reported(
    stack: LocalStack, mqtt_probe, production_mosquitto: ProductionMosquitto
) -> None:
    a, b = start_stations(stack, 2)
    audio = upload_bulletin(stack, seconds=1.0)
    # Only the server's account may write a plan topic: the attacker holds a stolen copy.
    probe = mqtt_probe(
        production_mosquitto, topics=[topics.plan(a.station_id), topics.plan(b.station_id)]
    )

    first = stack.broadcast(audio["id"], datetime.now(UTC) + timedelta(minutes=30), [a.station_id])
    old_plan = probe.wait_for(lambda m: m.topic == topics.plan(a.station_id)).payload
    stack.wait_for_states(first["id"], {"delivered", "fetched"}, timeout=15)
    later = datetime.now(UTC) + timedelta(minutes=40)
    stack.broadcast(audio["id"], later, [a.station_id, b.station_id])
    plan_for_b = probe.wait_for(lambda m: m.topic == topics.plan(b.station_id)).payload
    wait_until(lambda: len(a.agent.core.plan.items) == 2, 10, "station A to take the new plan")

    now = datetime.now(UTC)
    forged = seal(
        Plan(
            sender="server",
            seq=10**15,
            issued_at=now,
            expires_at=now + timedelta(hours=1),
            to=a.station_id,
            station_id=a.station_id,
            horizon_until=now + timedelta(hours=1),
        ),
        SigningKey.generate("plan"),
    )
    for payload in (forged, old_plan, plan_for_b, b'{"v":1,"kid":"x"', b"\x00\xff"):
        probe.publish(topics.plan(a.station_id), payload, qos=1)

    def reasons() -> list[str]:
        return [e["reason"] for e in events_of(stack, a.station_id) if e["kind"] == "rejected"]

    wait_until(lambda: len(reasons()) == 5, 10, "five rejections reported to the server")
    assert sorted(reasons()) == sorted(
        ["unknown_key", "replayed", "wrong_station", "malformed", "malformed"]
    )
    assert len(a.agent.core.plan.items) == 2  # the station kept its real programme


def test_station_rebooted_while_broker_is_down_plays_its_stored_plan(
    stack: LocalStack, production_mosquitto: ProductionMosquitto
) -> None:
    # Production brokers keep sessions across restarts (persistence), so the server's
    # subscription holds the station's events for it while it reconnects.
    mosquitto = production_mosquitto
    (node,) = start_stations(stack, 1)
    audio = upload_bulletin(stack, seconds=1.0)
    start_at = datetime.now(UTC) + timedelta(seconds=6)
    broadcast = stack.broadcast(audio["id"], start_at, [node.station_id])
    stack.wait_for_states(broadcast["id"], {"fetched"}, timeout=15)

    node.stop()
    mosquitto.stop()
    rebooted = NodeAgent(node.agent.config)  # a fresh process: only the disk remains
    stack.nodes[node.station_id] = running = RunningNode(rebooted, _thread_for(rebooted))
    wait_until(lambda: rebooted.player.records, 15, "the rebooted station to play")
    record = rebooted.player.records[0]
    assert abs((record.started_at - start_at).total_seconds()) < 0.05
    wait_until(lambda: record.finished_at is not None, 5, "playback to finish")

    mosquitto.start()  # the truth reaches the server once the network is back
    view = stack.wait_for_states(broadcast["id"], {"played"}, timeout=30)
    assert iso(view["targets"][0]["started_at"]) == record.started_at
    running.stop()


def _thread_for(agent: NodeAgent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def test_priority_bulletin_preempts_normal_and_the_interruption_is_reported(
    stack: LocalStack,
) -> None:
    (node,) = start_stations(stack, 1)
    long_audio = upload_bulletin(stack, seconds=6.0)
    short_audio = upload_bulletin(stack, seconds=1.0)
    start = datetime.now(UTC) + timedelta(seconds=3)
    normal = stack.broadcast(long_audio["id"], start, [node.station_id])
    urgent = stack.broadcast(
        short_audio["id"], start + timedelta(seconds=2), [node.station_id], Priority.PRIORITY
    )
    stack.wait_for_states(urgent["id"], {"played"}, timeout=30)
    view = stack.wait_for_states(normal["id"], {"interrupted"}, timeout=5)
    assert "pre-empted" in (view["targets"][0]["detail"] or "")


def test_station_process_reports_online_stopped_and_offline_when_killed(
    stack: LocalStack, tmp_path: Path
) -> None:
    config = stack.register_station("Cụm loa tiến trình", *COMMUNES[0])
    config_file = tmp_path / "station.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")

    def status() -> str:
        with stack.client() as http:
            return str(http.get(f"/api/v1/stations/{config.station_id}").json()["status"])

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "loaxa", "node", "--config", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    process = start()
    try:
        wait_until(lambda: status() == "online", 20, "the station to come online")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        wait_until(lambda: status() == "stopped", 10, "a clean stop to be reported")

        process = start()
        wait_until(lambda: status() == "online", 20, "the station to come back")
        os.kill(process.pid, signal.SIGKILL)  # power cut: no goodbye, only the last will
        process.wait(10)
        wait_until(lambda: status() == "offline", 10, "the last will to mark it offline")
    finally:
        if process.poll() is None:
            process.kill()


def test_key_rotation_reaches_the_station_and_plans_signed_anew_are_obeyed(
    stack: LocalStack,
) -> None:
    (node,) = start_stations(stack, 1)
    wait_until(lambda: node.agent.core.connected, 10, "the station to connect")
    with stack.client() as http:
        response = http.post("/api/v1/keys/rotate", json={"grace_hours": 1})
    assert response.status_code == 200, response.text
    old_kid, new_kid = response.json()["old_kid"], response.json()["new_kid"]

    wait_until(lambda: new_kid in node.agent.core.keyring.keys, 10, "the trust update")
    retired = node.agent.core.keyring.keys[old_kid]
    assert retired.valid_until is not None

    def stored_kids() -> set[str]:
        # A separate reader, as a reboot would be; the agent saves just after it trusts.
        return {k["kid"] for k in StateStore(node.agent.store.dir).load()[1].get("keys", [])}

    # A reboot keeps the rotated keyring.
    wait_until(lambda: {old_kid, new_kid} <= stored_kids(), 10, "the keyring on disk")

    audio = upload_bulletin(stack, seconds=1.0)
    later = stack.broadcast(
        audio["id"], datetime.now(UTC) + timedelta(minutes=30), [node.station_id]
    )
    stack.wait_for_states(later["id"], {"delivered", "fetched"}, timeout=15)
    kinds = [e["kind"] for e in events_of(stack, node.station_id)]
    assert "trust_updated" in kinds and "rejected" not in kinds
    assert "intrusion" not in kinds  # the server recognises its own rotated keys
