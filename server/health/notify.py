"""Tell people when an alarm opens or resolves: webhooks and e-mail, off the hot path.

A webhook that hangs or a mail relay that is down must never slow the health writer,
so :meth:`Notifier.send` only enqueues; one worker thread POSTs each change as JSON to
every ``alarm_webhooks`` URL (with a timeout, one retry, failures logged) and, when
``smtp_host`` is set, mails it to ``smtp_to``. Notifications are best effort: the alarm
itself is in the database whatever happens here. The queue holds at most
``alarm_notify_queue_max`` changes: with every receiver down during an alarm storm, the
oldest are dropped and counted rather than memory growing without end.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from functools import partial
from typing import Any

import httpx

from server.fleet.backlog import Backlog
from server.health.alarms import AlarmChange
from server.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 2
"""One call and one retry: a webhook down for longer is the receiver's problem to log."""
RETRY_PAUSE_S = 1.0
_STOP = object()


class Notifier:
    """A queue and a worker that deliver alarm changes to webhooks and e-mail."""

    def __init__(self, settings: Settings) -> None:
        self._webhooks = list(settings.alarm_webhooks)
        self._timeout = settings.alarm_webhook_timeout_s
        self._smtp = settings.smtp_host
        self._smtp_port = settings.smtp_port
        self._mail_from = settings.smtp_from
        self._mail_to = list(settings.smtp_to)
        self._queue: Backlog[Any] = Backlog(
            settings.alarm_notify_queue_max,
            lambda item: None if item is _STOP else "alarm",
            {"alarm"},
            what="alarm notifier queue",
        )
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.sent = 0
        self.retried = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self._webhooks) or bool(self._smtp and self._mail_to)

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alarm-notify", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        self._thread = None

    def send(self, changes: Sequence[AlarmChange]) -> None:
        """Queue notifications for these changes; returns at once."""
        if self._thread is None:
            return
        for change in changes:
            self._queue.put(change)

    def queue_stats(self) -> dict[str, Any]:
        """The queue's counters and the deliveries' for ``/api/v1/system``."""
        return {
            **self._queue.as_dict(),
            "sent": self.sent,
            "retried": self.retried,
            "failed": self.failed,
        }

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while (item := self._queue.get()) is not _STOP:
                for url in self._webhooks:
                    self._deliver(f"webhook {url}", partial(_post, client, url, item))
                if self._smtp and self._mail_to:
                    self._deliver("e-mail", partial(self._mail, item))

    def _deliver(self, where: str, attempt: Callable[[], None]) -> None:
        for number in range(1, ATTEMPTS + 1):
            try:
                attempt()
            except (httpx.HTTPError, OSError, smtplib.SMTPException) as exc:
                log.warning("alarm notification by %s failed (try %s): %s", where, number, exc)
                if number < ATTEMPTS and not self._stopping.wait(RETRY_PAUSE_S):
                    self.retried += 1
                    continue
                self.failed += 1
                return
            self.sent += 1
            return

    def _mail(self, change: AlarmChange) -> None:
        message = EmailMessage()
        verb = "opened" if change.state == "open" else change.state
        message["Subject"] = f"[Loaxa] {change.station_id}: {change.kind} {verb}"
        message["From"] = self._mail_from
        message["To"] = ", ".join(self._mail_to)
        message.set_content(
            f"Station: {change.station_id}\nAlarm: {change.kind} ({change.severity})\n"
            f"State: {change.state} at {change.at.isoformat()}\nDetail: {change.detail}\n"
        )
        assert self._smtp is not None
        with smtplib.SMTP(self._smtp, self._smtp_port, timeout=self._timeout) as smtp:
            smtp.send_message(message)


def _post(client: httpx.Client, url: str, change: AlarmChange) -> None:
    response = client.post(url, json={"type": "alarm", **change.as_json()})
    response.raise_for_status()
