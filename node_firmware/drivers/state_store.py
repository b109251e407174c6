"""The station's memory across reboots: the accepted plan, the replay guard, the keys.

A node must come back from a power cut with its programme *and* with the replay
guard's sequence numbers (otherwise an old signed message could be replayed after a
reboot). So the state is written the power-cut-safe way and kept in two generations.

File format (``state.json``, ``state.prev.json``, transient ``state.tmp``)::

    loaxa-state 1 gen=<n> len=<body bytes> sha256=<hex of body>\\n
    {"plan_b64": <base64 of the signed plan bytes>, "replay": {...}}

The header makes truncation and bit rot detectable without trusting the JSON. Save:
write ``state.tmp``, fsync, move the current file (if it is sound) to
``state.prev.json``, move the temp file into place, fsync the directory. Load picks
the sound file with the highest generation, so every crash point (including a
filesystem that reordered the renames) yields the newest state that was fully
written, or the one before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from loaxa_protocol.durable import fsync_dir
from loaxa_protocol.errors import StorageError

log = logging.getLogger(__name__)

CURRENT = "state.json"
PREVIOUS = "state.prev.json"
TEMP = "state.tmp"
_HEADER = re.compile(rb"loaxa-state 1 gen=(\d+) len=(\d+) sha256=([0-9a-f]{64})")


class StateStore:
    """Atomic, checksummed, two-generation storage of ``(plan_raw, memory)``."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._gen: int | None = None

    def save(self, plan_raw: bytes | None, memory: dict[str, Any]) -> None:
        """Persist both or neither; raises ``StorageError`` if the disk refuses."""
        gen = self._newest_gen() + 1 if self._gen is None else self._gen + 1
        try:
            body = json.dumps(
                {"plan_b64": base64.b64encode(plan_raw or b"").decode("ascii"), "replay": memory},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
        except (TypeError, ValueError) as exc:
            raise StorageError(f"replay state is not JSON-serialisable: {exc}") from exc
        digest = hashlib.sha256(body).hexdigest()
        header = f"loaxa-state 1 gen={gen} len={len(body)} sha256={digest}\n".encode()
        current, temp = self.dir / CURRENT, self.dir / TEMP
        try:
            with temp.open("wb") as f:
                f.write(header + body)
                f.flush()
                os.fsync(f.fileno())
            # Keep the old generation as the fallback only if it is sound: after a
            # fall-back load the current file may be the corrupt one.
            if _read(current) is not None:
                os.replace(current, self.dir / PREVIOUS)
            os.replace(temp, current)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot save station state in {self.dir}: {exc}") from exc
        self._gen = gen

    def load(self) -> tuple[bytes | None, dict[str, Any]]:
        """The newest sound state, or ``(None, {})``; never raises for bad content."""
        found = [(name, _read(self.dir / name)) for name in (CURRENT, TEMP, PREVIOUS)]
        sound = [(name, state) for name, state in found if state is not None]
        broken = [name for name, state in found if state is None and (self.dir / name).exists()]
        if not sound:
            if broken:
                log.error("no sound station state in %s (%s unusable)", self.dir, broken)
            self._gen = 0
            return None, {}
        name, (gen, plan_raw, replay) = max(sound, key=lambda item: item[1][0])
        if name != CURRENT:
            log.warning("station state: %s unusable, using %s (generation %s)", CURRENT, name, gen)
        self._gen = gen
        return plan_raw or None, replay

    def _newest_gen(self) -> int:
        gens = [state[0] for name in (CURRENT, TEMP, PREVIOUS) if (state := _read(self.dir / name))]
        return max(gens, default=0)


def _read(path: Path) -> tuple[int, bytes, dict[str, Any]] | None:
    """``(gen, plan_raw, replay)`` if ``path`` is a complete, intact state file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    header, _, body = data.partition(b"\n")
    match = _HEADER.fullmatch(header)
    if match is None:
        return None
    gen, length, digest = int(match[1]), int(match[2]), match[3].decode()
    if len(body) != length or hashlib.sha256(body).hexdigest() != digest:
        return None
    try:
        doc = json.loads(body)
        plan_raw = base64.b64decode(doc["plan_b64"], validate=True)
        replay = doc["replay"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(replay, dict):
        return None
    return gen, plan_raw, replay
