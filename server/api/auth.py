"""Sign-in, sign-out, who am I, and one-time-code (TOTP) enrolment.

The sign-in answer is the same for an unknown user, a wrong password and a disabled
account; after ``login_max_failures`` failures for one username or one address within
``login_window_minutes`` every attempt gets 429 until the window passes.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlmodel import Session

from server.api.deps import ContextDep, SessionDep
from server.audit.log import record_audit
from server.auth import totp
from server.auth.actor import Actor
from server.auth.deps import (
    ActorDep,
    LimiterDep,
    client_ip,
    same_origin,
    unauthorized,
)
from server.auth.errors import LoginFailed
from server.auth.models import LoginBody, TotpConfirm, TotpEnrollment, User, UserPublic
from server.auth.ratelimit import SignInLimiter
from server.auth.service import (
    SESSION_COOKIE,
    check_login,
    close_web_session,
    open_web_session,
    user_actor,
    user_public,
)
from server.context import ServerContext

router = APIRouter(prefix="/auth", tags=["auth"])


class Me(UserPublic):
    authenticated_by: str
    roles_withheld: bool
    """True when a role requires TOTP and the user has not enrolled yet."""


def too_many_attempts(retry_after_s: float) -> HTTPException:
    minutes = max(1, math.ceil(retry_after_s / 60))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"Đăng nhập sai quá nhiều lần, thử lại sau {minutes} phút / "
        f"too many failed sign-ins, try again in {minutes} min",
        headers={"Retry-After": str(math.ceil(retry_after_s))},
    )


def sign_in(
    request: Request,
    session: Session,
    context: ServerContext,
    limiter: SignInLimiter,
    body: LoginBody,
) -> tuple[User, str]:
    """Check the credentials and open a web session; raises 401/403/429 with a reason.

    Shared by the JSON endpoint and the sign-in page, so both have the same limits.
    """
    if request.headers.get("origin") and not same_origin(request, context.settings):
        # Login CSRF: another site signing the browser in as the attacker.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site sign-in refused")
    ip = client_ip(request)
    wait = limiter.retry_after(body.username, ip)
    if wait is not None:
        raise too_many_attempts(wait)
    now = context.clock()
    try:
        user = check_login(session, body.username, body.password, body.totp, now)
    except LoginFailed as exc:
        if exc.counts:
            limiter.record_failure(body.username, ip)
        attempted = body.username.strip().lower()[:64]
        record_audit(
            session,
            Actor(kind="user", name=attempted, source_ip=ip),
            "auth.login_failed",
            "user",
            attempted,
            after={"reason": exc.reason},
        )
        session.commit()
        raise unauthorized(str(exc)) from exc
    limiter.record_success(body.username)
    raw = open_web_session(session, user, context.settings, now, ip)
    actor = user_actor(session, user, context.settings, source_ip=ip)
    record_audit(session, actor, "auth.login", "user", str(user.id))
    session.commit()
    session.refresh(user)
    return user, raw


def set_session_cookie(response: Response, raw: str, context: ServerContext) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        max_age=int(context.settings.session_max_hours * 3600),
        path="/",
        secure=context.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def sign_out(request: Request, session: Session, actor: Actor) -> None:
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        close_web_session(session, raw)
        record_audit(session, actor, "auth.logout", "user", str(actor.user_id))
        session.commit()


@router.post("/login", response_model=UserPublic)
def login(
    body: LoginBody,
    request: Request,
    response: Response,
    session: SessionDep,
    context: ContextDep,
    limiter: LimiterDep,
) -> UserPublic:
    """Sign in; sets an HttpOnly, SameSite=Strict session cookie."""
    user, raw = sign_in(request, session, context, limiter, body)
    set_session_cookie(response, raw, context)
    return user_public(session, user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response, session: SessionDep, actor: ActorDep) -> None:
    """End this browser's session (API tokens are revoked with DELETE /tokens/{id})."""
    sign_out(request, session, actor)
    response.delete_cookie(SESSION_COOKIE, path="/")


def _own_user(session: Session, actor: Actor) -> User:
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a signed-in user has an account")
    return user


@router.get("/me", response_model=Me)
def read_me(session: SessionDep, actor: ActorDep) -> Me:
    user = _own_user(session, actor)
    public = user_public(session, user)
    return Me(
        **public.model_dump(),
        authenticated_by=actor.kind,
        roles_withheld=len(public.grants) > 0 and not actor.grants,
    )


@router.post("/totp/enroll", response_model=TotpEnrollment)
def enroll_totp(session: SessionDep, actor: ActorDep) -> TotpEnrollment:
    """Start TOTP enrolment: add the URI to an authenticator app, then confirm a code.

    Sign-in needs codes only after the confirmation, so a half-done enrolment cannot
    lock anyone out.
    """
    user = _own_user(session, actor)
    if actor.kind != "user":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "enrol TOTP from a signed-in session")
    secret = totp.new_secret()
    user.totp_pending_secret = secret
    session.add(user)
    record_audit(session, actor, "auth.totp_enroll", "user", str(user.id))
    session.commit()
    return TotpEnrollment(otpauth_uri=totp.provisioning_uri(secret, user.username), secret=secret)


@router.post("/totp/confirm", response_model=UserPublic)
def confirm_totp(
    body: TotpConfirm, session: SessionDep, actor: ActorDep, context: ContextDep
) -> UserPublic:
    """Finish enrolment with a current code; from now on sign-in needs a code."""
    user = _own_user(session, actor)
    secret = user.totp_pending_secret
    if secret is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no TOTP enrolment is pending: POST /auth/totp/enroll first"
        )
    step = totp.matching_step(secret, body.code, context.clock(), None)
    if step is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "code: wrong one-time code")
    user.totp_secret, user.totp_pending_secret, user.totp_last_step = secret, None, step
    session.add(user)
    record_audit(session, actor, "auth.totp_enabled", "user", str(user.id))
    session.commit()
    session.refresh(user)
    return user_public(session, user)
