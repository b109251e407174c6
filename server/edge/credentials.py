"""Is there a live credential on this request? Asked by the body-size gate before it reads
a large body, with the same rules as :func:`server.auth.deps.current_actor`: a bearer
token, when sent, decides alone; otherwise the session cookie."""

from __future__ import annotations

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Scope

from server.auth.service import SESSION_COOKIE, session_user, token_user
from server.context import ServerContext
from server.edge.body_limit import cookie_value


def _bearer(headers: Headers) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _live(context: ServerContext, bearer: str | None, cookie: str | None) -> bool:
    now = context.clock()
    with Session(context.engine) as session:
        if bearer is not None:
            return token_user(session, bearer, now) is not None
        if cookie:
            return session_user(session, cookie, context.settings, now) is not None
    return False


async def signed_in(scope: Scope) -> bool:
    """Whether the request's token or session is live (one indexed lookup, in a thread)."""
    headers = Headers(scope=scope)
    bearer, cookie = _bearer(headers), cookie_value(headers, SESSION_COOKIE)
    if bearer is None and not cookie:
        return False
    context: ServerContext = scope["app"].state.context
    return await run_in_threadpool(_live, context, bearer, cookie)
