"""The audit log as CSV for officials, still verifiable after it leaves the server.

Every column of the table is exported, ``at`` in exactly the form that was hashed, so
``entry_from_csv`` rebuilds entries whose hashes and links can be checked offline
(``server.audit.log.first_break``). Rows are in chain order, oldest first.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
station names and object ids come from users: such a cell is written with a leading
``'`` (OWASP's advice), and so is a cell that already starts with ``'``, which keeps the
escape reversible (``unescape_cell``). The file starts with a UTF-8 byte order mark
because Excel, which province offices use, otherwise shows "Xã" as mojibake.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from server.audit.log import hashed_time
from server.audit.models import AuditEntry

CSV_COLUMNS = (
    "id",
    "at",
    "actor_kind",
    "actor_name",
    "actor_user_id",
    "roles",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "source_ip",
    "prev_hash",
    "hash",
)
BOM = "\ufeff"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def unescape_cell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def _cells(entry: AuditEntry) -> list[str]:
    values = entry.model_dump()
    values["at"] = hashed_time(entry.at)
    # None becomes an empty cell; no nullable column ever holds an empty string.
    return [escape_cell("" if values[c] is None else str(values[c])) for c in CSV_COLUMNS]


def csv_lines(entries: Iterable[AuditEntry]) -> Iterator[str]:
    """The export as text chunks: BOM and header first, then one line per entry."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield BOM + buffer.getvalue()
    for entry in entries:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(_cells(entry))
        yield buffer.getvalue()


def entry_from_csv(row: dict[str, str]) -> AuditEntry:
    """One exported row (from ``csv.DictReader`` over the file) back as an entry."""
    values: dict[str, Any] = {c: unescape_cell(row[c]) for c in CSV_COLUMNS}
    for nullable in ("actor_user_id", "before", "after", "source_ip"):
        values[nullable] = values[nullable] or None
    values["id"] = int(values["id"])
    values["at"] = datetime.fromisoformat(values["at"])
    if values["actor_user_id"] is not None:
        values["actor_user_id"] = int(values["actor_user_id"])
    return AuditEntry(**values)
