"""When the station re-reads its cached audio to prove it is still the audio it fetched.

A file's name is its sha256, checked when it was downloaded; but an SD card rots, and
a person with a shell can replace a file. Bytes that changed must never be played nor
reported ``played``. So the core trusts a cached file only once it has been verified
*since this boot*, and re-verifies each file every :data:`VERIFY_EVERY`; each file's
period is shifted by up to :data:`VERIFY_SPREAD` (derived from its hash), so the
re-reads of a large library do not all fall in the same minute.

A file just downloaded, or stored from an alert's inline audio, was hash-checked on
its way in and counts as verified then. A verification that fails is the caller's to
act on (the file is discarded, reported ``audio_corrupt`` and fetched again).

Pure: the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

VERIFY_EVERY = timedelta(hours=6)
VERIFY_SPREAD = timedelta(hours=1)


def _offset(sha: str) -> timedelta:
    return VERIFY_SPREAD * (int(sha[:8], 16) / 2**32)


@dataclass
class AudioChecks:
    """Which cached files are verified since boot, and which are due again."""

    verified_at: dict[str, datetime] = field(default_factory=dict)
    in_progress: set[str] = field(default_factory=set)
    _due: dict[str, datetime] = field(default_factory=dict)
    """sha → when it must be verified again; kept, as the core asks on every input"""

    def trusted(self, sha: str) -> bool:
        return sha in self.verified_at

    def verified(self, sha: str, now: datetime) -> None:
        self.in_progress.discard(sha)
        self.verified_at[sha] = now
        self._due[sha] = now + VERIFY_EVERY + _offset(sha)

    def failed(self, sha: str) -> None:
        self.in_progress.discard(sha)
        self.verified_at.pop(sha, None)
        self._due.pop(sha, None)

    def due_at(self, sha: str) -> datetime | None:
        """When ``sha`` must be verified (again); None: at once (never since boot)."""
        return self._due.get(sha)

    def take_due(self, shas: Iterable[str], now: datetime) -> tuple[list[str], datetime | None]:
        """The files of ``shas`` to verify now (marked in progress), in the order given,
        and when the next of the others falls due."""
        due: list[str] = []
        next_at: datetime | None = None
        in_progress, due_at = self.in_progress, self._due
        for sha in shas:
            if sha in in_progress:
                continue
            at = due_at.get(sha)
            if at is None or at <= now:
                due.append(sha)
                in_progress.add(sha)
            elif next_at is None or at < next_at:
                next_at = at
        return due, next_at
