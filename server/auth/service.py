"""Accounts in the database: users, grants, API tokens, web sessions and the sign-in rules.

Functions that change accounts never commit: the caller records the audit entry in
the same transaction and commits once, so a change and its audit line are stored
together or not at all. Only the bookkeeping of a credential's last use (and the
removal of an expired session) commits by itself.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from server.audit.log import record_audit
from server.auth import totp
from server.auth.actor import SYSTEM, Actor, Grant
from server.auth.errors import AccountExists, AuthError, LoginFailed
from server.auth.models import (
    ApiToken,
    GrantBody,
    RoleGrant,
    User,
    UserPublic,
    WebSession,
    check_username,
)
from server.auth.passwords import (
    burn_verify,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from server.auth.permissions import Role
from server.models import Area, AreaLevel
from server.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "loaxa_session"
TOKEN_PREFIX = "lxa_"
# Refresh a session's last_seen at most this often: one write per minute, not per request.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)

WRONG_CREDENTIALS = "sai tên đăng nhập hoặc mật khẩu / wrong username or password"


def digest(raw: str) -> str:
    """What the database keeps of a token or session id."""
    return hashlib.sha256(raw.encode()).hexdigest()


# ------------------------------------------------------------ users and grants


def find_user(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username.strip().lower())).first()


def grants_of(session: Session, user_id: int) -> tuple[Grant, ...]:
    rows = session.exec(
        select(RoleGrant)
        .where(RoleGrant.user_id == user_id)
        .order_by(col(RoleGrant.area_code), col(RoleGrant.role))
    ).all()
    return tuple(Grant(role=r.role, area_code=r.area_code) for r in rows)


def create_user(
    session: Session,
    username: str,
    password: str | None,
    now: datetime,
    display_name: str = "",
) -> User:
    """A new active user; ``password`` None makes a token-only service account."""
    username = check_username(username)
    if find_user(session, username) is not None:
        raise AccountExists(f"username {username!r} is taken")
    if password is not None:
        check_password_policy(password, username)
    user = User(
        username=username,
        display_name=display_name,
        password_hash=hash_password(password) if password is not None else None,
        created_at=now,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create won
        session.rollback()
        raise AccountExists(f"username {username!r} is taken") from exc
    return user


def add_grant(session: Session, user: User, role: Role, area_code: str, now: datetime) -> bool:
    """Give ``user`` the role in the area; False when it already held it."""
    assert user.id is not None
    if session.get(Area, area_code) is None:
        raise AuthError(f"area_code {area_code!r} is not a known area")
    existing = session.exec(
        select(RoleGrant).where(
            RoleGrant.user_id == user.id,
            RoleGrant.role == role.value,
            RoleGrant.area_code == area_code,
        )
    ).first()
    if existing is not None:
        return False
    session.add(RoleGrant(user_id=user.id, role=role.value, area_code=area_code, created_at=now))
    session.flush()
    return True


def remove_grant(session: Session, user: User, role: Role, area_code: str) -> bool:
    existing = session.exec(
        select(RoleGrant).where(
            RoleGrant.user_id == user.id,
            RoleGrant.role == role.value,
            RoleGrant.area_code == area_code,
        )
    ).first()
    if existing is None:
        return False
    session.delete(existing)
    session.flush()
    return True


def user_public(session: Session, user: User) -> UserPublic:
    assert user.id is not None
    return UserPublic(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        is_active=user.is_active,
        totp_enabled=user.totp_secret is not None,
        grants=[
            GrantBody(role=Role(g.role), area_code=g.area_code) for g in grants_of(session, user.id)
        ],
        created_at=user.created_at,
    )


def needs_totp(grants: Iterable[Grant], settings: Settings) -> bool:
    required = {r.value for r in settings.require_totp_for}
    return any(g.role in required for g in grants)


def user_actor(
    session: Session, user: User, settings: Settings, *, source_ip: str | None = None
) -> Actor:
    """The actor of a signed-in ``user``; one who must enrol TOTP first carries no role.

    (An API token's actor comes from :func:`token_actor`.)
    """
    assert user.id is not None
    grants = grants_of(session, user.id)
    if user.totp_secret is None and needs_totp(grants, settings):
        grants = ()
    return Actor(
        kind="user",
        name=user.username,
        user_id=user.id,
        grants=grants,
        source_ip=source_ip,
    )


# ------------------------------------------------------------------- sign-in


def check_login(
    session: Session, username: str, password: str, code: str | None, now: datetime
) -> User:
    """The user these credentials prove, or :class:`LoginFailed`.

    Unknown, inactive and password-less users cost the same argon2 time as a real
    check and get the same message, so answers reveal nothing about which usernames exist.
    """
    user = find_user(session, username)
    if user is None or user.password_hash is None or not user.is_active:
        burn_verify(password)
        reason = "unknown_user" if user is None else "inactive"
        raise LoginFailed(WRONG_CREDENTIALS, reason=reason)
    if not verify_password(user.password_hash, password):
        raise LoginFailed(WRONG_CREDENTIALS, reason="bad_password")
    if user.totp_secret is not None:
        if not code:
            raise LoginFailed(
                "cần mã xác thực (TOTP) / a one-time code (totp) is required",
                reason="totp_missing",
                counts=False,
            )
        step = totp.matching_step(user.totp_secret, code, now, user.totp_last_step)
        if step is None:
            raise LoginFailed(
                "mã xác thực sai hoặc đã dùng / wrong or already used one-time code",
                reason="totp_wrong",
            )
        user.totp_last_step = step
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.add(user)
    return user


def open_web_session(
    session: Session, user: User, settings: Settings, now: datetime, ip: str | None
) -> str:
    """Store a new session and return its id, which only the browser's cookie holds."""
    assert user.id is not None
    raw = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=digest(raw),
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(hours=settings.session_max_hours),
            last_seen=now,
            ip=ip[:64] if ip else None,
        )
    )
    return raw


def close_web_session(session: Session, raw: str) -> None:
    row = session.get(WebSession, digest(raw))
    if row is not None:
        session.delete(row)


def session_user(session: Session, raw: str, settings: Settings, now: datetime) -> User | None:
    """The user behind a session cookie, or None when it is unknown, expired or idle."""
    row = session.get(WebSession, digest(raw))
    if row is None:
        return None
    idle_limit = row.last_seen + timedelta(minutes=settings.session_idle_minutes)
    if now >= row.expires_at or now >= idle_limit:
        session.delete(row)
        session.commit()
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if now - row.last_seen >= LAST_SEEN_RESOLUTION:
        row.last_seen = now
        session.add(row)
        session.commit()
    return user


# -------------------------------------------------------------------- tokens


def issue_token(
    session: Session, user: User, name: str, now: datetime, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new API token for ``user``; the raw value is returned once and never stored."""
    assert user.id is not None
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name, user_id=user.id, token_hash=digest(raw), created_at=now, expires_at=expires_at
    )
    session.add(token)
    session.flush()
    return token, raw


def _live_token(session: Session, token: ApiToken, user: User, now: datetime) -> bool:
    """Whether the token may act now; notes its use (once a minute at most)."""
    if token.revoked_at is not None or not user.is_active:
        return False
    if token.expires_at is not None and now >= token.expires_at:
        return False
    if token.last_used_at is None or now - token.last_used_at >= LAST_SEEN_RESOLUTION:
        token.last_used_at = now
        session.add(token)
        session.commit()
    return True


def token_user(session: Session, raw: str, now: datetime) -> tuple[ApiToken, User] | None:
    """The live token and its user, or None when unknown, revoked, expired or inactive."""
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .where(ApiToken.token_hash == digest(raw))
    ).first()
    if found is None or not _live_token(session, *found, now):
        return None
    return found


def token_actor(session: Session, raw: str, now: datetime, source_ip: str | None) -> Actor | None:
    """The actor of a live API token, or None (see :func:`token_user`).

    The token, its user and the user's grants in one query: every API call pays for
    this lookup, a broadcast on its way to the air included.
    """
    rows = session.exec(
        select(ApiToken, User, RoleGrant.role, RoleGrant.area_code)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .outerjoin(RoleGrant, col(RoleGrant.user_id) == col(User.id))
        .where(ApiToken.token_hash == digest(raw))
        .order_by(col(RoleGrant.area_code), col(RoleGrant.role))
    ).all()
    if not rows:
        return None
    token, user = rows[0][0], rows[0][1]
    if not _live_token(session, token, user, now):
        return None
    assert user.id is not None
    return Actor(
        kind="token",
        name=f"{user.username}/{token.name}",
        user_id=user.id,
        grants=tuple(
            Grant(role=role, area_code=area) for _t, _u, role, area in rows if role is not None
        ),
        source_ip=source_ip,
    )


# ----------------------------------------------------------------- bootstrap


def ensure_bootstrap_admin(session: Session, settings: Settings, now: datetime) -> User | None:
    """Create the first administrator from settings when the database has no user yet.

    Without this a fresh installation would have nobody able to sign in; once any
    user exists the settings are ignored, so a changed password is never reset.
    A start-up step of its own, so it audits and commits by itself.
    """
    username, password = settings.bootstrap_admin_username, settings.bootstrap_admin_password
    if username is None or password is None:
        return None
    if session.exec(select(User.id)).first() is not None:
        return None
    user = create_user(session, username, password.get_secret_value(), now, "Quản trị tỉnh")
    provinces = session.exec(
        select(Area.code).where(Area.level == AreaLevel.PROVINCE).order_by(col(Area.code))
    ).all()
    wanted = set(settings.seed_province_codes)
    for code in provinces:
        if code in wanted:
            add_grant(session, user, Role.PROVINCE_ADMIN, code, now)
    record_audit(
        session,
        SYSTEM,
        "user.bootstrap",
        "user",
        str(user.id),
        after={"username": user.username, "provinces": sorted(wanted)},
    )
    session.commit()
    log.info("created bootstrap administrator %s for provinces %s", user.username, sorted(wanted))
    return user
