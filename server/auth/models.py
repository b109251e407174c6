"""Account tables and their API models: users, role grants, API tokens, web sessions.

Secrets are never stored: passwords as argon2id hashes, tokens and session ids as
sha256 of a random 32-byte value shown once. A stolen database therefore yields no
usable credential (argon2 makes passwords slow to guess; 256-bit tokens cannot be).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from server.auth.permissions import Role
from server.db import UTCDateTime, utcnow

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


def check_username(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(USERNAME_PATTERN, value):
        raise ValueError(
            f"username {value!r} must be 2-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return value


class User(SQLModel, table=True):
    # "user" is reserved in PostgreSQL.
    __tablename__ = "account"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=64)
    display_name: str = Field(default="", max_length=200)
    password_hash: str | None = Field(
        default=None, max_length=256, description="argon2id; None: token-only service account"
    )
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_pending_secret: str | None = Field(
        default=None, max_length=64, description="enrolled but not yet confirmed by a code"
    )
    totp_last_step: int | None = Field(
        default=None, description="last accepted TOTP time step, so a code works only once"
    )
    is_active: bool = True
    created_at: datetime = _utc(default_factory=utcnow)
    language: str | None = Field(
        default=None, max_length=8, description="the web pages' language (vi, en); None: default"
    )


class RoleGrant(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("user_id", "role", "area_code"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="account.id", index=True)
    role: str = Field(max_length=32)
    area_code: str = Field(foreign_key="area.code", index=True)
    created_at: datetime = _utc(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A credential for a system (the province's CAP sender); acts with its user's grants."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    user_id: int = Field(foreign_key="account.id", index=True)
    token_hash: str = Field(unique=True, max_length=64, description="sha256 hex")
    created_at: datetime = _utc(default_factory=utcnow)
    expires_at: datetime | None = _utc(default=None)
    revoked_at: datetime | None = _utc(default=None)
    last_used_at: datetime | None = _utc(default=None)


class WebSession(SQLModel, table=True):
    token_hash: str = Field(primary_key=True, max_length=64, description="sha256 hex")
    user_id: int = Field(foreign_key="account.id", index=True)
    created_at: datetime = _utc(default_factory=utcnow)
    expires_at: datetime = _utc()
    last_seen: datetime = _utc(default_factory=utcnow)
    ip: str | None = Field(default=None, max_length=64)


# ------------------------------------------------------------- API models


class GrantBody(SQLModel):
    role: Role
    area_code: str = Field(max_length=16)


class UserCreate(SQLModel):
    username: str
    display_name: str = Field(default="", max_length=200)
    password: str | None = Field(
        default=None, description="omit for a service account that only uses API tokens"
    )
    grants: list[GrantBody] = Field(default_factory=list)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return check_username(value)


class UserPublic(SQLModel):
    id: int
    username: str
    display_name: str
    is_active: bool
    totp_enabled: bool
    grants: list[GrantBody]
    created_at: datetime


class LoginBody(SQLModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1024)
    totp: str | None = Field(default=None, max_length=12)


class TokenCreate(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    user_id: int | None = Field(default=None, ge=1, le=2**63 - 1, description="default: the caller")
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenPublic(SQLModel):
    id: int
    name: str
    user_id: int
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenIssued(TokenPublic):
    token: str = Field(description="shown once; only its sha256 is stored")


class TotpEnrollment(SQLModel):
    otpauth_uri: str
    secret: str


class TotpConfirm(SQLModel):
    code: str = Field(min_length=6, max_length=12)


class LoginFailure(SQLModel, table=True):
    """One failed sign-in under one throttling key (``user:<name>`` or ``ip:<address>``).

    Kept in the database, not in memory, so every server replica counts the same
    failures: a guesser spread over replicas by the proxy meets one limit.
    """

    __tablename__ = "login_failure"
    __table_args__ = (sa.Index("ix_login_failure_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200)
    at: datetime = _utc()
