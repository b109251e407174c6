"""``loaxa worker ingest --workers N``: N ingest worker processes until SIGTERM / SIGINT.

Each process runs one :class:`~server.fleet.worker.IngestWorker` (a process, not a thread,
each: JSON parsing and row building are pure Python, so only processes add cores). The
parent only starts them, forwards the stop and reports a child that died; children are
``spawn``-ed, so they start from a clean interpreter and read the same LOAXA_* settings.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0


def _child(index: int) -> None:
    from server.fleet.worker import run_worker
    from server.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_worker(Settings(), index, stop)


def run_ingest_workers(count: int, first_index: int = 0) -> int:
    """Run ``count`` workers; returns 0 after a clean stop, 1 if a worker died on its own."""
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = [
        context.Process(target=_child, args=(first_index + n,), name=f"ingest-{first_index + n}")
        for n in range(count)
    ]
    for child in children:
        child.start()
    log.info("%s ingest worker process(es) started", count)
    died = False
    while not stop.wait(1.0):
        dead = [child for child in children if not child.is_alive()]
        if dead:
            log.error(
                "ingest worker %s exited (%s); stopping the others", dead[0].name, dead[0].exitcode
            )
            died = True
            break
    for child in children:
        if child.is_alive() and child.pid is not None:
            child.terminate()  # SIGTERM: the child writes and acknowledges what it holds
    for child in children:
        child.join(STOP_TIMEOUT_S)
        if child.is_alive():
            log.error(
                "ingest worker %s did not stop in %s s; killing it", child.name, STOP_TIMEOUT_S
            )
            child.kill()
    return 1 if died else 0
