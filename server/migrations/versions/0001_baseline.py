"""Baseline: the schema of the release of 2026-11-25 (commit b3b9340).

Databases that release made carry exactly these tables; `server.schema.upgrade` stamps
them with this revision instead of running it. The audit log's append-only triggers and
the audit chain's lock row are written out here, not taken from the models' DDL events,
so that this revision stays what it was when it shipped.

Revision ID: 0001
Revises:
Create Date: 2026-12-07 04:40:52.333154
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Every table this revision creates: a database without a revision must have them all to
# be adopted (server.schema._check_adoptable).
TABLES = (
    "account",
    "area",
    "audioasset",
    "auditchainlock",
    "auditentry",
    "planneditem",
    "alert_record",
    "apitoken",
    "approvalrule",
    "broadcast",
    "programme",
    "rolegrant",
    "spokentext",
    "station",
    "stationgroup",
    "websession",
    "alarm",
    "alert_delivery",
    "broadcasttarget",
    "healthhourly",
    "healthsample",
    "programmehold",
    "programmestation",
    "stationcommand",
    "stationevent",
    "stationgroupmember",
    "stationliveness",
    "alarmevent",
)

_REFUSE = "audit log is append-only"


def _audit_guards() -> None:
    """The database itself refuses to rewrite an audit entry; the chain's lock row."""
    if op.get_bind().dialect.name == "sqlite":
        for name, operation in (
            ("auditentry_no_update", "UPDATE"),
            ("auditentry_no_delete", "DELETE"),
        ):
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {operation} ON auditentry "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END"
            )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION loaxa_audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION USING MESSAGE = '{_REFUSE}: ' || TG_OP || ' refused'; END $$"
        )
        op.execute(
            "CREATE TRIGGER auditentry_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON auditentry FOR EACH STATEMENT EXECUTE FUNCTION loaxa_audit_append_only()"
        )
    op.execute("INSERT INTO auditchainlock (id, writes) VALUES (1, 0)")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("totp_secret", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column(
            "totp_pending_secret", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
        ),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "area",
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column(
            "level",
            sa.Enum(
                "province", "district", "commune", name="arealevel", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("parent_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_code"],
            ["area.code"],
        ),
        sa.PrimaryKeyConstraint("code"),
    )
    with op.batch_alter_table("area", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_area_parent_code"), ["parent_code"], unique=False)

    op.create_table(
        "audioasset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("source_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("codec", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("mime_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column(
            "original_filename", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False
        ),
        sa.Column("lufs_before", sa.Float(), nullable=True),
        sa.Column("lufs_after", sa.Float(), nullable=False),
        sa.Column("true_peak_before_dbtp", sa.Float(), nullable=False),
        sa.Column("true_peak_after_dbtp", sa.Float(), nullable=False),
        sa.Column("gain_db", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("library", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("library"),
        sa.UniqueConstraint("sha256"),
    )
    with op.batch_alter_table("audioasset", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audioasset_source_sha256"), ["source_sha256"], unique=False
        )

    op.create_table(
        "auditchainlock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("writes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "auditentry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("object_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("object_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("source_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
        sa.UniqueConstraint("prev_hash"),
    )
    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auditentry_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_auditentry_actor_name"), ["actor_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_auditentry_at"), ["at"], unique=False)
        batch_op.create_index("ix_auditentry_object", ["object_type", "object_id"], unique=False)

    op.create_table(
        "planneditem",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("item_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("start_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("length_ms", sa.Integer(), nullable=False),
        sa.Column("priority", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("first_plan_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_plan_seq", sa.BigInteger(), nullable=False),
        sa.Column("withdrawn_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("station_id", "item_id", name="uq_planned_item"),
    )
    with op.batch_alter_table("planneditem", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_planneditem_start_at"), ["start_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_planneditem_station_id"), ["station_id"], unique=False)

    op.create_table(
        "alert_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("severity", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("tone", sa.Boolean(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("gap_s", sa.Integer(), nullable=False),
        sa.Column("payload", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("canned", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("audio_id", sa.Integer(), nullable=True),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("area_codes", sa.JSON(), nullable=True),
        sa.Column("station_ids", sa.JSON(), nullable=True),
        sa.Column("topic_targets", sa.JSON(), nullable=True),
        sa.Column("needs_confirmation", sa.Boolean(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("confirmed_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("cancelled_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("cap_sender", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("cap_identifier", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["audio_id"],
            ["audioasset.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id"),
    )
    with op.batch_alter_table("alert_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alert_record_cap_identifier"), ["cap_identifier"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_alert_record_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alert_record_state"), ["state"], unique=False)

    op.create_table(
        "apitoken",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apitoken_user_id"), ["user_id"], unique=False)

    op.create_table(
        "approvalrule",
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("approver_area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approver_area_code"],
            ["area.code"],
        ),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.PrimaryKeyConstraint("area_code"),
    )
    op.create_table(
        "broadcast",
        sa.Column("audio_id", sa.Integer(), nullable=False),
        sa.Column("start_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "priority",
            sa.Enum(
                "emergency",
                "live",
                "priority",
                "normal",
                "background",
                name="priority",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["audio_id"],
            ["audioasset.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("broadcast", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_broadcast_audio_id"), ["audio_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_broadcast_start_at"), ["start_at"], unique=False)

    op.create_table(
        "programme",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column(
            "priority",
            sa.Enum(
                "emergency",
                "live",
                "priority",
                "normal",
                "background",
                name="priority",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("proposal", sa.Boolean(), nullable=False),
        sa.Column("proposal_of", sa.Integer(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "draft",
                "submitted",
                "approved",
                "rejected",
                "archived",
                name="programmestate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("rendered", sa.JSON(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("reject_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("submitted_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.ForeignKeyConstraint(
            ["proposal_of"],
            ["programme.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_programme_area_code"), ["area_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_programme_state"), ["state"], unique=False)

    op.create_table(
        "rolegrant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "role", "area_code"),
    )
    with op.batch_alter_table("rolegrant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rolegrant_area_code"), ["area_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_rolegrant_user_id"), ["user_id"], unique=False)

    op.create_table(
        "spokentext",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("audio_id", sa.Integer(), nullable=False),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("voice", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["audio_id"],
            ["audioasset.id"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("spokentext", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spokentext_audio_id"), ["audio_id"], unique=False)

    op.create_table(
        "station",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("mqtt_username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("mqtt_password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "online",
                "degraded",
                "offline",
                "stopped",
                "unknown",
                name="stationstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("status_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("last_health_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mqtt_username"),
    )
    with op.batch_alter_table("station", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_station_area_code"), ["area_code"], unique=False)

    op.create_table(
        "stationgroup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("stationgroup", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stationgroup_area_code"), ["area_code"], unique=False)

    op.create_table(
        "websession",
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("websession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_websession_user_id"), ["user_id"], unique=False)

    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("severity", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("opened_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("resolved_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_opened_at"), ["opened_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alarm_state"), ["state"], unique=False)
        batch_op.create_index(
            "ix_alarm_station_kind_state", ["station_id", "kind", "state"], unique=False
        )

    op.create_table(
        "alert_delivery",
        sa.Column("alert_pk", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("received_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("playing_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("resent", sa.Integer(), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_pk"],
            ["alert_record.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("alert_pk", "station_id"),
    )
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alert_delivery_station_id"), ["station_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_alert_delivery_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "broadcasttarget",
        sa.Column("broadcast_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "planned",
                "delivered",
                "fetched",
                "playing",
                "played",
                "failed",
                "interrupted",
                name="targetstate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("first_plan_seq", sa.BigInteger(), nullable=True),
        sa.Column("state_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcast.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("broadcast_id", "station_id"),
    )
    with op.batch_alter_table("broadcasttarget", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broadcasttarget_station_id"), ["station_id"], unique=False
        )

    op.create_table(
        "healthhourly",
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("metric", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("hour", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("avg", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("station_id", "metric", "hour"),
    )
    with op.batch_alter_table("healthhourly", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_healthhourly_hour"), ["hour"], unique=False)

    op.create_table(
        "healthsample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("node_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("load_1m", sa.Float(), nullable=True),
        sa.Column("mem_used_pct", sa.Float(), nullable=True),
        sa.Column("disk_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_free_pct", sa.Float(), nullable=True),
        sa.Column("clock_offset_ms", sa.Float(), nullable=True),
        sa.Column("modem_rssi_dbm", sa.Float(), nullable=True),
        sa.Column("amp_current_ma", sa.Float(), nullable=True),
        sa.Column("amp_temp_c", sa.Float(), nullable=True),
        sa.Column("amp_on", sa.Boolean(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("healthsample", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_healthsample_at"), ["at"], unique=False)
        batch_op.create_index("ix_healthsample_station_at", ["station_id", "at"], unique=False)

    op.create_table(
        "programmehold",
        sa.Column("programme_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("since", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["programme.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("programme_id", "station_id"),
    )
    with op.batch_alter_table("programmehold", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_programmehold_station_id"), ["station_id"], unique=False
        )

    op.create_table(
        "programmestation",
        sa.Column("programme_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["programme.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("programme_id", "station_id"),
    )
    with op.batch_alter_table("programmestation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_programmestation_station_id"), ["station_id"], unique=False
        )

    op.create_table(
        "stationcommand",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("args", sa.JSON(), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replied_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stationcommand", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stationcommand_seq"), ["seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stationcommand_station_id"), ["station_id"], unique=False
        )

    op.create_table(
        "stationevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("item_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("plan_seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("alert_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("received_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stationevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stationevent_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stationevent_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stationevent_station_id"), ["station_id"], unique=False
        )

    op.create_table(
        "stationgroupmember",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["stationgroup.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("group_id", "station_id"),
    )
    op.create_table(
        "stationliveness",
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("last_seen_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("link_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fault_kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("fault_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fault_detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("station_id"),
    )
    op.create_table(
        "alarmevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["alarm_id"],
            ["alarm.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarmevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarmevent_alarm_id"), ["alarm_id"], unique=False)

    _audit_guards()


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS auditentry_append_only ON auditentry")
        op.execute("DROP FUNCTION IF EXISTS loaxa_audit_append_only()")
    with op.batch_alter_table("alarmevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarmevent_alarm_id"))

    op.drop_table("alarmevent")
    op.drop_table("stationliveness")
    op.drop_table("stationgroupmember")
    with op.batch_alter_table("stationevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stationevent_station_id"))
        batch_op.drop_index(batch_op.f("ix_stationevent_received_at"))
        batch_op.drop_index(batch_op.f("ix_stationevent_alert_id"))

    op.drop_table("stationevent")
    with op.batch_alter_table("stationcommand", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stationcommand_station_id"))
        batch_op.drop_index(batch_op.f("ix_stationcommand_seq"))

    op.drop_table("stationcommand")
    with op.batch_alter_table("programmestation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_programmestation_station_id"))

    op.drop_table("programmestation")
    with op.batch_alter_table("programmehold", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_programmehold_station_id"))

    op.drop_table("programmehold")
    with op.batch_alter_table("healthsample", schema=None) as batch_op:
        batch_op.drop_index("ix_healthsample_station_at")
        batch_op.drop_index(batch_op.f("ix_healthsample_at"))

    op.drop_table("healthsample")
    with op.batch_alter_table("healthhourly", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_healthhourly_hour"))

    op.drop_table("healthhourly")
    with op.batch_alter_table("broadcasttarget", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcasttarget_station_id"))

    op.drop_table("broadcasttarget")
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_delivery_updated_at"))
        batch_op.drop_index(batch_op.f("ix_alert_delivery_station_id"))

    op.drop_table("alert_delivery")
    with op.batch_alter_table("alarm", schema=None) as batch_op:
        batch_op.drop_index("ix_alarm_station_kind_state")
        batch_op.drop_index(batch_op.f("ix_alarm_state"))
        batch_op.drop_index(batch_op.f("ix_alarm_opened_at"))

    op.drop_table("alarm")
    with op.batch_alter_table("websession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_websession_user_id"))

    op.drop_table("websession")
    with op.batch_alter_table("stationgroup", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stationgroup_area_code"))

    op.drop_table("stationgroup")
    with op.batch_alter_table("station", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_station_area_code"))

    op.drop_table("station")
    with op.batch_alter_table("spokentext", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spokentext_audio_id"))

    op.drop_table("spokentext")
    with op.batch_alter_table("rolegrant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rolegrant_user_id"))
        batch_op.drop_index(batch_op.f("ix_rolegrant_area_code"))

    op.drop_table("rolegrant")
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_programme_state"))
        batch_op.drop_index(batch_op.f("ix_programme_area_code"))

    op.drop_table("programme")
    with op.batch_alter_table("broadcast", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcast_start_at"))
        batch_op.drop_index(batch_op.f("ix_broadcast_audio_id"))

    op.drop_table("broadcast")
    op.drop_table("approvalrule")
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apitoken_user_id"))

    op.drop_table("apitoken")
    with op.batch_alter_table("alert_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_record_state"))
        batch_op.drop_index(batch_op.f("ix_alert_record_expires_at"))
        batch_op.drop_index(batch_op.f("ix_alert_record_cap_identifier"))

    op.drop_table("alert_record")
    with op.batch_alter_table("planneditem", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planneditem_station_id"))
        batch_op.drop_index(batch_op.f("ix_planneditem_start_at"))

    op.drop_table("planneditem")
    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.drop_index("ix_auditentry_object")
        batch_op.drop_index(batch_op.f("ix_auditentry_at"))
        batch_op.drop_index(batch_op.f("ix_auditentry_actor_name"))
        batch_op.drop_index(batch_op.f("ix_auditentry_action"))

    op.drop_table("auditentry")
    op.drop_table("auditchainlock")
    with op.batch_alter_table("audioasset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audioasset_source_sha256"))

    op.drop_table("audioasset")
    with op.batch_alter_table("area", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_area_parent_code"))

    op.drop_table("area")
    op.drop_table("account")
