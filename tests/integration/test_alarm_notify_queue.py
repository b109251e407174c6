"""The alarm notifier's queue stays bounded while a webhook hangs: the oldest notifications
are dropped and counted, the newest still go out once the receiver answers. A real HTTP
server on loopback plays the receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from server.health.alarms import AlarmChange
from server.health.notify import Notifier
from server.settings import Settings

T0 = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


class Receiver:
    """A webhook receiver whose first answer waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.first_call = threading.Event()
        self.received: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.first_call.set()
                receiver.gate.wait(10)
                receiver.received.append(body["alarm_id"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def change(alarm_id: int) -> AlarmChange:
    return AlarmChange(alarm_id, "cb-st-001", "offline", "major", "open", "silent 10 min", T0)


def test_a_hanging_webhook_keeps_the_newest_notifications_and_counts_the_rest(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = Settings(data_dir=tmp_path, alarm_webhooks=[receiver.url], alarm_notify_queue_max=10)
    notifier = Notifier(settings)
    notifier.start()
    try:
        notifier.send([change(0)])
        assert receiver.first_call.wait(5)  # the worker now waits on the receiver
        notifier.send([change(n) for n in range(1, 31)])  # an alarm storm meanwhile
        stats = notifier.queue_stats()
        assert (stats["queued"], stats["max"], stats["dropped"]) == (10, 10, {"alarm": 20})

        receiver.gate.set()
        deadline = time.monotonic() + 10
        while len(receiver.received) < 11 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        notifier.stop()
    assert receiver.received == [0, *range(21, 31)]  # the oldest of the storm were shed
    stats = notifier.queue_stats()
    assert (stats["sent"], stats["failed"], stats["peak"]) == (11, 0, 10)
