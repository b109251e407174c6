"""An older database gains the unique indexes newer code declares, or refuses to start."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from server.db import add_missing_unique_indexes, create_tables, make_engine

INDEX = "uq_alert_record_cap_message"
ROW = (
    "INSERT INTO alert_record (alert_id, title, severity, drill, state, tone, repeat, gap_s, "
    "payload, payload_bytes, area_codes, station_ids, topic_targets, needs_confirmation, "
    "created_by, source, cap_sender, cap_identifier, created_at, expires_at) VALUES "
    "(:alert_id, 'Bão', 'extreme', 0, 'cancelled', 1, 2, 3, 'inline', 0, '[]', '[]', '[]', 0, "
    "'bot', 'cap', 'kttv', :identifier, '2026-09-13 00:00:00', '2026-09-13 02:00:00')"
)


def older_database(tmp_path: Path, identifiers: list[str]) -> sa.Engine:
    """The alert table as the previous release left it: no unique index, these rows."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    create_tables(engine)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP INDEX {INDEX}"))
        for number, identifier in enumerate(identifiers):
            connection.execute(sa.text(ROW), {"alert_id": f"al-{number}", "identifier": identifier})
    return engine


def test_an_older_alert_table_gains_the_one_alert_per_cap_message_index(tmp_path: Path) -> None:
    engine = older_database(tmp_path, ["KTTV-1", "KTTV-2"])
    assert add_missing_unique_indexes(engine) == [INDEX]
    assert add_missing_unique_indexes(engine) == []  # idempotent
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text(ROW), {"alert_id": "al-9", "identifier": "KTTV-1"})


def test_an_older_table_that_already_repeats_a_message_refuses_to_start(tmp_path: Path) -> None:
    engine = older_database(tmp_path, ["KTTV-1", "KTTV-1"])  # the bug this index closes
    with pytest.raises(RuntimeError, match=f"repeat \\(cap_sender, cap_identifier\\).*{INDEX}"):
        create_tables(engine)
    with engine.connect() as connection:  # nothing stored was lost
        count = connection.execute(sa.text("SELECT count(*) FROM alert_record")).scalar_one()
    assert count == 2
