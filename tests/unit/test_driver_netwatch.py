"""The network watcher's thread life: an agent stopped before it ran still shuts down."""

from __future__ import annotations

from node_firmware.drivers.netwatch import NetworkWatcher


def test_a_watcher_never_started_stops_without_error() -> None:
    NetworkWatcher(on_return=lambda _reason: None, broker=lambda: None).stop()


def test_a_started_watcher_stops_its_thread() -> None:
    watcher = NetworkWatcher(on_return=lambda _reason: None, broker=lambda: None, poll_s=0.05)
    watcher.start()
    watcher.stop()
    assert not watcher._thread.is_alive()
