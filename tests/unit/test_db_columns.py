"""An older database gains the nullable columns newer code declares, keeping its rows."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from server.db import add_missing_columns, create_tables, make_engine
from server.models import StationEvent


def test_an_older_event_table_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    create_tables(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("PRAGMA foreign_keys=OFF"))  # an event row alone
        # Shape the table as the previous release created it: without the as-run columns.
        for column in ("started_at", "finished_at", "alert_id"):
            connection.execute(sa.text(f"DROP INDEX IF EXISTS ix_stationevent_{column}"))
            connection.execute(sa.text(f"ALTER TABLE stationevent DROP COLUMN {column}"))
        connection.execute(
            sa.text(
                "INSERT INTO stationevent (station_id, kind, at, received_at) "
                "VALUES ('st-1', 'played', '2026-11-25 05:00:00', '2026-11-25 05:00:01')"
            )
        )
    assert add_missing_columns(engine) == [
        "stationevent.started_at",
        "stationevent.finished_at",
        "stationevent.alert_id",
    ]
    assert add_missing_columns(engine) == []  # idempotent
    with Session(engine) as session:
        (event,) = session.exec(select(StationEvent)).all()
    assert event.kind == "played" and event.alert_id is None and event.started_at is None
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("stationevent")}
    assert "ix_stationevent_alert_id" in indexes
