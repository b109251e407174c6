"""Who is asking, and may they: the dependencies every endpoint and page uses.

Credentials, in order: ``Authorization: Bearer <API token>`` (systems), then the
``loaxa_session`` cookie (browsers). A bad bearer token is a 401 even when a cookie
is present, so a misconfigured system never silently acts as whoever last signed in
on the same machine.

CSRF defence: the session cookie is ``SameSite=Strict`` and, in addition, every
cookie-authenticated request that changes something (POST, PUT, PATCH, DELETE) must
carry an ``Origin`` (or, failing that, ``Referer``) naming this server: its own host,
``public_url`` or one of ``csrf_trusted_origins``. Browsers always send ``Origin`` on
cross-site and same-site form posts and scripts cannot forge it, so the server-rendered
forms need no hidden token. Bearer-token requests are not exposed to CSRF (a browser
never adds the header by itself) and are not checked.

:func:`authorize` is the one permission check: endpoints and pages call it with the
action and the areas the object lives in.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from server.api.deps import ContextDep, SessionDep
from server.areas import ancestry, subtree_codes
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.permissions import (
    Action,
    allowed_somewhere,
    first_denied,
    is_read,
    scope_roots,
)
from server.auth.ratelimit import SignInLimiter
from server.auth.service import SESSION_COOKIE, session_user, token_actor, user_actor
from server.models import Area
from server.settings import Settings

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

bearer_scheme = HTTPBearer(
    auto_error=False, description="an API token from POST /api/v1/tokens or `loaxa token create`"
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="set by POST /api/v1/auth/login; writes also need a same-origin Origin header",
)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": 'Bearer realm="loaxa"'}
    )


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether the request's ``Origin`` (or ``Referer``) is this server.

    A request naming neither is refused: a browser always sends one on a form post.
    """
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    origin = _origin_of(claimed)
    trusted = {
        _origin_of(settings.public_url),
        *(_origin_of(o) for o in settings.csrf_trusted_origins),
    }
    if origin in trusted:
        return True
    # The request's own host, whatever scheme a TLS-terminating proxy left us with.
    host = request.headers.get("host", "").lower()
    return bool(host) and urlsplit(origin).netloc == host


def check_csrf(request: Request, settings: Settings) -> None:
    if request.method in UNSAFE_METHODS and not same_origin(request, settings):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "cross-site request refused: a cookie-authenticated write needs an Origin or "
            "Referer header naming this server (or use an API token)",
        )


def current_actor(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Actor | None:
    """The authenticated actor, or None when the request carries no credential."""
    now = context.clock()
    ip = client_ip(request)
    if bearer is not None:
        actor = token_actor(session, bearer.credentials, now, ip)
        if actor is None:
            raise unauthorized("invalid, expired or revoked API token")
        return actor
    if cookie:
        signed_in = session_user(session, cookie, context.settings, now)
        if signed_in is None:
            raise unauthorized("your session has ended; sign in again")
        check_csrf(request, context.settings)
        return user_actor(session, signed_in, context.settings, source_ip=ip)
    return None


OptionalActorDep = Annotated[Actor | None, Depends(current_actor)]


async def require_actor(actor: OptionalActorDep) -> Actor:
    """Never blocks, so it runs on the event loop instead of a thread-pool hop."""
    if actor is None:
        raise unauthorized(
            "sign in first: send 'Authorization: Bearer <token>' or the session cookie "
            "from POST /api/v1/auth/login"
        )
    return actor


ActorDep = Annotated[Actor, Depends(require_actor)]


async def get_login_limiter(request: Request) -> SignInLimiter:
    limiter: SignInLimiter = request.app.state.login_limiter
    return limiter


LimiterDep = Annotated[SignInLimiter, Depends(get_login_limiter)]


# ------------------------------------------------------------ the one check


def _area_label(session: Session, code: str) -> str:
    area = session.get(Area, code)
    return f"{code} ({area.name})" if area is not None else repr(code)


def authorize(
    actor: Actor,
    action: Action,
    area_codes: Iterable[str] | None,
    session: Session,
    *,
    object_type: str = "-",
    object_id: str = "-",
) -> None:
    """Raise 403 naming the action and area unless ``actor`` may do ``action`` in EVERY area.

    ``area_codes`` None means "somewhere": for objects without an area (audio, the
    server's own health) and for lists that are then cut to :func:`visible_areas`.
    A refused write is written to the audit log (and committed) before the 403, so
    probing for permissions leaves a trace; the caller must not have changed anything yet.
    """
    if area_codes is None:
        denied = None if allowed_somewhere(actor.grants, action) else "any area"
    else:
        denied_code = first_denied(
            actor.grants, action, area_codes, cache(lambda code: ancestry(session, code))
        )
        denied = _area_label(session, denied_code) if denied_code is not None else None
    if denied is None:
        return
    if not is_read(action):
        record_audit(
            session,
            actor,
            f"denied:{action}",
            object_type,
            object_id,
            after={"area": denied},
        )
        session.commit()
    roles = actor.role_summary if actor.grants else "none active"
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"permission denied: {action} in area {denied} (your roles: {roles})",
    )


def visible_areas(actor: Actor, action: Action, session: Session) -> set[str]:
    """Every area code where ``actor`` may do ``action``: what a list may show."""
    return subtree_codes(session, scope_roots(actor.grants, action))
