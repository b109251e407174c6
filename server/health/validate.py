"""Judge one health report field by field: keep what is plausible, list what is not.

A heartbeat is the only word a technician gets from a remote station, so one broken probe
(a thermistor reading 1e9 °C, a card reader returning -1 bytes) must not cost the other
readings. Unlike the protocol's all-or-nothing ``Health`` model, each field is checked on
its own against a plausible range; a bad field is dropped and named in ``problems``, and
the report is stored with what remains. Only a payload that is not a JSON object, or that
names another station, is refused outright.

Pure: no I/O, the clock is an argument.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_FUTURE = timedelta(minutes=5)
"""A station clock further ahead than this is wrong; its ``at`` is not trusted."""
MAX_PAST = timedelta(days=1)
"""Older reports are a clock that never synced (1970), not a late delivery."""
MAX_TEXT = 64
MAX_PROBLEMS = 20


class Rejected(ValueError):
    """The payload cannot be attributed or read at all; nothing of it is stored."""


def _number(low: float, high: float) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or not low <= value <= high:
            return None
        return value

    return check


def _integer(low: int, high: int) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if low <= value <= high else None

    return check


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else None


PiB = 2**50
TEN_YEARS_S = 10 * 365 * 86400

CHECKS: dict[str, Callable[[Any], Any]] = {
    "agent_version": _text,
    "uptime_s": _number(0, TEN_YEARS_S),
    "disk_free_bytes": _integer(0, PiB),
    "disk_total_bytes": _integer(1, PiB),
    "cpu_temp_c": _number(-40, 150),
    "load_1m": _number(0, 10_000),
    "mem_used_pct": _number(0, 100),
    "ntp_synced": _flag,
    "modem_rssi_dbm": _number(-150, 0),
    "modem_operator": _text,
    "amp_on": _flag,
    "amp_current_ma": _number(0, 100_000),
    "amp_temp_c": _number(-40, 200),
    "amp_fault": _text,
    "relay_ok": _flag,
    "volume_pct": _integer(0, 100),
    "plan_seq": _integer(0, 2**63 - 1),
    "plan_items": _integer(0, 100_000),
    "cached_audio": _integer(0, 1_000_000),
    "playing_item": _text,
    "health_dropped": _integer(0, 2**31),
    "clock_offset_ms": _number(-86_400_000, 86_400_000),
}
"""Every field a heartbeat may carry and the values that make physical sense."""

NULLABLE = frozenset(CHECKS) - {"agent_version", "uptime_s", "amp_on", "relay_ok"}
"""Fields whose explicit ``null`` means "not measured here" rather than a problem."""

METRICS = (
    "cpu_temp_c",
    "load_1m",
    "mem_used_pct",
    "disk_free_bytes",
    "disk_total_bytes",
    "disk_free_pct",
    "clock_offset_ms",
    "modem_rssi_dbm",
    "amp_current_ma",
    "amp_temp_c",
    "amp_on",
)
"""The numeric columns of a sample, charted and aggregated (``amp_on`` as 0/1)."""


@dataclass(frozen=True)
class Checked:
    """A report reduced to its plausible fields."""

    values: dict[str, Any]
    node_at: datetime | None
    problems: list[str] = field(default_factory=list)

    def metric(self, name: str) -> Any:
        return self.values.get(name)


def parse_at(value: Any, now: datetime) -> tuple[datetime | None, str | None]:
    """The station's timestamp if it is aware, ISO 8601 and plausible; else why not."""
    if not isinstance(value, str):
        return None, "at: missing or not a string"
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None, "at: not an ISO 8601 time"
    if at.tzinfo is None or at.utcoffset() is None:
        return None, "at: no timezone"
    at = at.astimezone(UTC)
    if at > now + MAX_FUTURE:
        return None, f"at: {at.isoformat()} is in the future"
    if at < now - MAX_PAST:
        return None, f"at: {at.isoformat()} is too old (clock not set?)"
    return at, None


def check_health(station_id: str, payload: bytes | str, now: datetime) -> Checked:
    """Validate one heartbeat from ``station_id`` (the topic's station) at server time ``now``.

    Raises :class:`Rejected` only when nothing can be kept.
    """
    try:
        # Decoded first: json.loads on bytes sniffs the encoding, a fifth of its time.
        data = json.loads(payload.decode() if isinstance(payload, bytes) else payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise Rejected("not a JSON object")
    claimed = data.get("station_id")
    if claimed is not None and claimed != station_id:
        # The broker ACL confines a station to its own topics; this is a bug or an attack.
        raise Rejected(f"names station {claimed!r}")
    problems: list[str] = []
    if claimed is None:
        problems.append("station_id: missing")
    if data.get("type", "health") != "health":
        problems.append(f"type: {str(data.get('type'))[:MAX_TEXT]!r} is not 'health'")
    node_at, at_problem = parse_at(data.get("at"), now)
    if at_problem:
        problems.append(at_problem)

    values: dict[str, Any] = {}
    for name, value in data.items():
        if name in {"type", "station_id", "at"}:
            continue
        check = CHECKS.get(name)
        if check is None:
            problems.append(f"{str(name)[:MAX_TEXT]}: unknown field")
            continue
        if value is None and name in NULLABLE:
            continue
        kept = check(value)
        if kept is None:
            problems.append(f"{name}: implausible value {_show(value)}")
        else:
            values[name] = kept
    for name in sorted(CHECKS.keys() - NULLABLE - values.keys()):
        if not any(p.startswith(f"{name}:") for p in problems):
            problems.append(f"{name}: missing")
    _derive_disk(values, problems)
    return Checked(values, node_at, problems[:MAX_PROBLEMS])


def _derive_disk(values: dict[str, Any], problems: list[str]) -> None:
    free, total = values.get("disk_free_bytes"), values.get("disk_total_bytes")
    if free is None or total is None:
        return
    if free > total:
        problems.append("disk_free_bytes: larger than disk_total_bytes")
        del values["disk_free_bytes"]
        return
    values["disk_free_pct"] = round(100.0 * free / total, 3)


def _show(value: Any) -> str:
    return repr(value)[:MAX_TEXT]
