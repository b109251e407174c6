"""The agent's input queue: arrival order, except that an alert jumps the driver news."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from node_firmware.agent import Inbox
from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    CommandReceived,
    Input,
    PlaybackFinished,
    RelayReadback,
    StreamUnreachable,
    TrustReceived,
)

SHA = "a" * 64


def drain(inbox: Inbox) -> list[Input]:
    out = []
    while (item := inbox.get(0)) is not None:
        out.append(item)
    return out


def test_an_alert_goes_ahead_of_downloads_and_readings() -> None:
    inbox = Inbox()
    news = [AudioFetched(SHA), RelayReadback(True, 900.0), StreamUnreachable("s-1", "network")]
    for item in news:
        inbox.put(item)
    inbox.put(AlertReceived(b"alert"))
    assert drain(inbox) == [AlertReceived(b"alert"), *news]


def test_an_alert_never_overtakes_a_signed_message_or_a_player_report() -> None:
    inbox = Inbox()
    trust = TrustReceived(b"new keys")  # may introduce the key the alert is signed with
    finished = PlaybackFinished("b-1", datetime.now(UTC))  # the bulletin had ended
    inbox.put(trust)
    inbox.put(AudioFetched(SHA))
    inbox.put(finished)
    inbox.put(AudioFetched(SHA))
    inbox.put(AlertReceived(b"first"))
    inbox.put(CommandReceived(b"cmd"))
    inbox.put(AlertReceived(b"second"))
    assert drain(inbox) == [
        trust,
        AudioFetched(SHA),
        finished,
        AlertReceived(b"first"),
        AudioFetched(SHA),
        CommandReceived(b"cmd"),
        AlertReceived(b"second"),
    ]


def test_get_waits_for_another_thread_and_times_out() -> None:
    inbox = Inbox()
    started = time.monotonic()
    assert inbox.get(0.05) is None
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, inbox.put, args=(AlertReceived(b"x"),)).start()
    assert inbox.get(2) == AlertReceived(b"x")
    assert len(inbox) == 0
