"""Migration 0002 gives an older database the one-alert-per-CAP-message index, or refuses
(naming the repeats) when the old bug already stored one — and then changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from server.db import make_engine
from server.schema import differences, state, upgrade

INDEX = "uq_alert_record_cap_message"
ROW = (
    "INSERT INTO alert_record (alert_id, title, severity, drill, state, tone, repeat, gap_s, "
    "payload, payload_bytes, area_codes, station_ids, topic_targets, needs_confirmation, "
    "created_by, source, cap_sender, cap_identifier, created_at, expires_at) VALUES "
    "(:alert_id, 'Bão', 'extreme', 0, 'cancelled', 1, 2, 3, 'inline', 0, '[]', '[]', '[]', 0, "
    "'bot', 'cap', 'kttv', :identifier, '2026-09-13 00:00:00', '2026-09-13 02:00:00')"
)


def database_at_0001(tmp_path: Path, identifiers: list[str]) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    with engine.begin() as connection:
        for number, identifier in enumerate(identifiers):
            connection.execute(sa.text(ROW), {"alert_id": f"al-{number}", "identifier": identifier})
    return engine


def test_an_older_alert_table_gains_the_one_alert_per_cap_message_index(tmp_path: Path) -> None:
    engine = database_at_0001(tmp_path, ["KTTV-1", "KTTV-2"])
    upgrade(engine)
    assert state(engine).up_to_date and differences(engine) == []
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(sa.text(ROW), {"alert_id": "al-9", "identifier": "KTTV-1"})


def test_an_older_table_that_already_repeats_a_message_is_refused_and_kept(
    tmp_path: Path,
) -> None:
    engine = database_at_0001(tmp_path, ["KTTV-1", "KTTV-1"])  # the bug this index closes
    with pytest.raises(RuntimeError, match=f"kttv KTTV-1 ×2.*{INDEX}"):
        upgrade(engine)
    assert state(engine).current == "0001"
    with engine.connect() as connection:  # nothing stored was lost
        count = connection.execute(sa.text("SELECT count(*) FROM alert_record")).scalar_one()
    assert count == 2


def test_a_migration_failing_half_way_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    """SQLite's driver commits before DDL; the migration connection must not."""
    engine = database_at_0001(tmp_path, ["KTTV-1"])
    with engine.begin() as connection:  # in the way of revision 0003's first table
        connection.execute(sa.text("CREATE TABLE claimcode (id INTEGER PRIMARY KEY)"))
    with pytest.raises(sa.exc.OperationalError, match="claimcode"):
        upgrade(engine)  # 0002 applies, then 0003 fails
    assert state(engine).current == "0001"
    with engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("alert_record")}
        indexes = {i["name"] for i in sa.inspect(connection).get_indexes("alert_record")}
    assert "cap_sent" not in columns and INDEX not in indexes  # 0002 was rolled back too


def test_programmes_referenced_by_stations_take_the_public_column_in_place(
    tmp_path: Path,
) -> None:
    engine = database_at_0001(tmp_path, [])
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO area (code, name, level) VALUES ('04', 'Cao Bằng', 'province')"
        ))
        connection.execute(sa.text(
            "INSERT INTO programme (key, title, area_code, priority, proposal, state, spec, "
            "rendered, duration_ms, created_by, updated_by, created_at, updated_at, state_at) "
            "VALUES ('sang', 'Bản tin sáng', '04', 'normal', 0, 'approved', '{}', '{}', 0, "
            "'a', 'a', '2026-11-01 00:00:00', '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
        ))
        connection.execute(sa.text(
            "INSERT INTO station (id, name, area_code, latitude, longitude, mqtt_username, "
            "mqtt_password_hash, status, created_at) VALUES ('st-1', 'Loa 1', '04', 22.6, "
            "106.2, 'st-1', 'x', 'online', '2026-11-01 00:00:00')"
        ))
        connection.execute(sa.text(
            "INSERT INTO programmestation (programme_id, station_id) VALUES (1, 'st-1')"
        ))
    upgrade(engine)
    assert state(engine).up_to_date and differences(engine) == []
    with engine.connect() as connection:
        public = connection.execute(sa.text("SELECT public FROM programme")).scalar_one()
    assert public in (1, True)
