"""One-file backups of a running server, and restores into an empty data directory.

Why not copy the data directory: a copy of a SQLite file being written is not a
database, and a PostgreSQL server's files are not in it. So the database is read in one
snapshot transaction (SQLite's WAL read snapshot; PostgreSQL's REPEATABLE READ) and
written as rows, one JSON Lines member per table, which also makes a backup portable
between SQLite and PostgreSQL. Every other file of the data directory (the audio store,
the keys that stations trust, the speech cache) is archived as it is: audio is content
addressed and never rewritten, so a copy taken while the server runs is consistent.

A restore makes the schema at the backup's revision by running the migrations, loads the
rows, then migrates to this version: an old backup restores into a new release.
Signing sequences are time based (``server.keys.Sequence``), so a server restored from an
old backup never reuses a sequence number its stations have seen.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import Engine, text

from loaxa_protocol.durable import atomic_file
from loaxa_protocol.errors import StorageError
from server.db import make_engine, utcnow
from server.schema import FOREIGN_TABLES, load_metadata, state, upgrade
from server.settings import Settings

FORMAT = "loaxa-backup/1"
MANIFEST = "manifest.json"
DB_PREFIX = "database/"
FILES_PREFIX = "files/"
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_ROWS_PER_READ = 2000


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    revision: str
    tables: dict[str, int]
    files: int
    size_bytes: int


# ---------------------------------------------------------------- values <-> JSON


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def _decoder(column: sa.Column[Any]) -> Any:
    """How a JSON value turns back into what this column's type accepts."""
    kind = column.type
    if isinstance(kind, sa.TypeDecorator):
        kind = kind.impl if isinstance(kind.impl, sa.types.TypeEngine) else kind.impl()
    if isinstance(kind, sa.DateTime):
        return lambda v: None if v is None else datetime.fromisoformat(v)
    if isinstance(kind, sa.Enum) and kind.enum_class is not None:
        enum_class = kind.enum_class
        return lambda v: None if v is None else enum_class(v)
    if isinstance(kind, sa.LargeBinary):
        return lambda v: None if v is None else base64.b64decode(v)
    return None


# ---------------------------------------------------------------------- backup


def _sqlite_path(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).resolve()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[sa.Connection]:
    """One read transaction: every table as it was at the same instant."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(utcnow().timestamp())
    info.mode = 0o600
    archive.addfile(info, io.BytesIO(data))


def _dump_tables(
    connection: sa.Connection, archive: tarfile.TarFile, digests: dict[str, str]
) -> dict[str, int]:
    metadata = load_metadata()
    counts: dict[str, int] = {}
    for table in metadata.sorted_tables:
        rows = 0
        buffer = io.BytesIO()
        result = connection.execution_options(yield_per=_ROWS_PER_READ).execute(table.select())
        for row in result.mappings():
            line = {key: _encode(value) for key, value in row.items()}
            buffer.write(json.dumps(line, ensure_ascii=False, sort_keys=True).encode() + b"\n")
            rows += 1
        name = f"{DB_PREFIX}{table.name}.jsonl"
        data = buffer.getvalue()
        digests[name] = hashlib.sha256(data).hexdigest()
        _add_bytes(archive, name, data)
        counts[table.name] = rows
    return counts


def _data_files(settings: Settings) -> Iterator[tuple[Path, str]]:
    """Every file of the data directory but the live SQLite database itself."""
    database = _sqlite_path(settings.db_url)
    skip = {Path(f"{database}{suffix}") for suffix in SQLITE_SUFFIXES} if database else set()
    root = settings.data_dir
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
            yield path, path.relative_to(root).as_posix()


def write_backup(settings: Settings, out: Path) -> BackupSummary:
    """Write one consistent archive of the database and the data directory to ``out``."""
    out = out.expanduser().resolve()
    if out.is_relative_to(settings.data_dir):
        raise StorageError(f"{out}: a backup must not be written inside the data directory")
    engine = make_engine(settings.db_url)
    at = state(engine)
    if not at.up_to_date:
        engine.dispose()
        raise StorageError("the database is not at this version's schema: run `loaxa db upgrade`")
    out.parent.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    files = 0
    try:
        with atomic_file(out, mode=0o600) as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            with _snapshot(engine) as connection:
                tables = _dump_tables(connection, archive, digests)
            for path, relative in _data_files(settings):
                data = path.read_bytes()
                name = FILES_PREFIX + relative
                digests[name] = hashlib.sha256(data).hexdigest()
                _add_bytes(archive, name, data)
                files += 1
            manifest = {
                "format": FORMAT,
                "created_at": utcnow().isoformat(),
                "schema_revision": at.current,
                "database": engine.dialect.name,
                "tables": tables,
                "sha256": digests,
            }
            _add_bytes(archive, MANIFEST, json.dumps(manifest, indent=1).encode())
    except OSError as exc:
        raise StorageError(f"cannot write the backup {out}: {exc}") from exc
    finally:
        engine.dispose()
    return BackupSummary(out, at.current or "", tables, files, out.stat().st_size)


# --------------------------------------------------------------------- restore


def _read_archive(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every member, each checked against the manifest's sha256."""
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            members: dict[str, bytes] = {}
            for info in archive.getmembers():
                if not info.isfile():
                    continue
                extracted: IO[bytes] | None = archive.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    except (OSError, tarfile.TarError) as exc:
        raise StorageError(f"{path}: not a readable Loaxa backup ({exc})") from exc
    if MANIFEST not in members:
        raise StorageError(f"{path}: no {MANIFEST}: not a Loaxa backup")
    manifest = json.loads(members.pop(MANIFEST))
    if manifest.get("format") != FORMAT:
        raise StorageError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    digests: dict[str, str] = manifest["sha256"]
    for name, digest in digests.items():
        if name not in members:
            raise StorageError(f"{path}: {name} is missing from the archive")
        if hashlib.sha256(members[name]).hexdigest() != digest:
            raise StorageError(f"{path}: {name} is damaged (sha256 differs)")
    return manifest, members


def _check_empty_target(settings: Settings, engine: Engine) -> None:
    database = _sqlite_path(settings.db_url)
    present = [
        p
        for p in (settings.data_dir.rglob("*") if settings.data_dir.exists() else [])
        if p.is_file() and (database is None or not str(p.resolve()).startswith(str(database)))
    ]
    if present:
        raise StorageError(
            f"{settings.data_dir} is not empty ({present[0]}…): restore into an empty data "
            "directory, so nothing there is overwritten"
        )
    if not state(engine).empty:
        raise StorageError("the target database already has tables: restore into an empty one")


def _load_rows(connection: sa.Connection, members: dict[str, bytes]) -> None:
    metadata = load_metadata()
    for table in metadata.sorted_tables:
        name = f"{DB_PREFIX}{table.name}.jsonl"
        if table.name in FOREIGN_TABLES or name not in members:
            continue
        decoders = {c.name: _decoder(c) for c in table.columns}
        rows = []
        for line in members[name].splitlines():
            row = json.loads(line)
            rows.append(
                {
                    k: (decoders[k](v) if decoders.get(k) else v)
                    for k, v in row.items()
                    if k in decoders
                }
            )
        if connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
            connection.execute(table.delete())  # rows the migrations seeded (the chain lock)
        for start in range(0, len(rows), _ROWS_PER_READ):
            connection.execute(table.insert(), rows[start : start + _ROWS_PER_READ])
    if connection.dialect.name == "postgresql":
        _advance_sequences(connection, metadata)


def _advance_sequences(connection: sa.Connection, metadata: sa.MetaData) -> None:
    """PostgreSQL's id sequences past the restored rows (SQLite derives them itself)."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer) or not column.autoincrement:
                continue
            sequence = connection.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar_one()
            if sequence:
                connection.execute(
                    text(
                        f'SELECT setval(:s, COALESCE((SELECT max("{column.name}") '
                        f'FROM "{table.name}"), 0) + 1, false)'
                    ),
                    {"s": sequence},
                )


def restore_backup(settings: Settings, archive_path: Path) -> dict[str, Any]:
    """Restore ``archive_path`` into the (empty) data directory and database of ``settings``."""
    manifest, members = _read_archive(archive_path.expanduser().resolve())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        _check_empty_target(settings, engine)
        for name, data in members.items():
            if not name.startswith(FILES_PREFIX):
                continue
            target = (settings.data_dir / name[len(FILES_PREFIX) :]).resolve()
            if not target.is_relative_to(settings.data_dir):
                raise StorageError(f"{archive_path}: {name} points outside the data directory")
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(data)
            if target.is_relative_to(settings.keys_dir):
                target.chmod(0o600)
        upgrade(engine, manifest["schema_revision"])
        with engine.begin() as connection:
            _load_rows(connection, members)
        upgrade(engine)
    finally:
        engine.dispose()
    return manifest
