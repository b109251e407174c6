"""One request-size gate in front of every route: refuse a body before anyone parses it.

Starlette spools a multipart body to a temporary file and FastAPI reads a JSON body
whole before the route (and its sign-in check) runs, so a limit inside a route comes too
late: a stranger could make the server hold 200 MB to be told 401. This ASGI middleware
runs first and:

1. answers 413 at once when ``Content-Length`` is over the route's limit (no byte read);
2. on the few routes allowed more than the small default (uploads, CAP XML), checks the
   credential *before* reading anything, so only a signed-in caller can send a big body;
3. counts the bytes of a body sent without a length (chunked) and stops reading, with a
   413, as soon as they pass the limit.

The limits are data (:class:`BodyLimit`); the credential check is a function handed in,
so this module knows nothing of sessions or tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.i18n import LANGUAGE_COOKIE, N_, pick_language, translations

CredentialCheck = Callable[[Scope], Awaitable[bool]]
"""Whether the request carries a live API token or session (looked up, not just present)."""


@dataclass(frozen=True)
class BodyLimit:
    """A route allowed a bigger body than the default, and why (named in the refusal)."""

    method: str
    path: str
    """a regular expression matched against the whole path"""
    limit_bytes: int
    why: str
    """what sets the limit ("setting max_upload_bytes"), so an operator knows what to turn"""
    page_field: str | None = None
    """for a page route: the form field its refusal belongs under"""
    stated_bytes: int | None = None
    """the limit as people know it, when the body may exceed it a little (multipart framing
    around an upload of at most ``max_upload_bytes``)"""

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str
    page_message: str | None = None
    """msgid for a page: the page shows this, translated, under ``page_field``"""
    params: dict[str, str | int] | None = None


TOO_LARGE_PAGE = N_("The file is larger than %(mb)s MB.")
TOO_LARGE_FORM = N_("The form is too large (more than %(kb)s kB); shorten the text.")


class RequestSizeGate:
    """Caps every request body: ``limits`` per route, ``default_limit_bytes`` elsewhere."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Sequence[BodyLimit],
        default_limit_bytes: int,
        default_why: str,
        signed_in: CredentialCheck,
        api_prefix: str,
    ) -> None:
        self.app = app
        self.limits = tuple(limits)
        self.default = BodyLimit("*", ".*", default_limit_bytes, default_why, "form")
        self.signed_in = signed_in
        self.api_prefix = api_prefix

    def limit_for(self, method: str, path: str) -> BodyLimit:
        return next((rule for rule in self.limits if rule.matches(method, path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.limit_for(scope["method"], scope["path"])
        declared = _declared_length(Headers(scope=scope))
        if declared == "invalid":
            await self._refuse(scope, send, Refusal(400, "Content-Length is not a number"))
            return
        if declared is not None and declared > rule.limit_bytes:
            await self._refuse(scope, send, self._too_large(rule, scope))
            return
        if rule.limit_bytes > self.default.limit_bytes and not await self.signed_in(scope):
            # Only someone signed in may make the server read more than the default.
            await self._refuse_stranger(scope, send)
            return

        received = 0
        exceeded = answered = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.limit_bytes:
                    exceeded = True
                    # To the app this looks like a client that went away: it stops parsing.
                    return {"type": "http.disconnect"}
            return message

        async def quiet_send(message: Message) -> None:
            nonlocal answered
            if answered or not exceeded:  # an answer begun before the limit is finished
                answered = True
                await send(message)

        try:
            await self.app(scope, counted_receive, quiet_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not answered:
            await self._refuse(scope, send, self._too_large(rule, scope))

    def _is_page(self, scope: Scope) -> bool:
        return not str(scope["path"]).startswith(self.api_prefix + "/")

    def _too_large(self, rule: BodyLimit, scope: Scope) -> Refusal:
        limit = rule.stated_bytes or rule.limit_bytes
        detail = (
            f"request body too large: {scope['method']} {scope['path']} accepts at most "
            f"{limit} bytes ({limit / 1024 / 1024:.1f} MiB; {rule.why})"
        )
        if rule.page_field == "file":
            return Refusal(413, detail, TOO_LARGE_PAGE, {"mb": max(1, limit // 1_000_000)})
        return Refusal(413, detail, TOO_LARGE_FORM, {"kb": limit // 1000})

    async def _refuse_stranger(self, scope: Scope, send: Send) -> None:
        if self._is_page(scope):
            target = quote(str(scope["path"]))
            await _answer(send, 303, b"", [(b"location", f"/login?next={target}".encode())])
            return
        detail = (
            "sign in first: send 'Authorization: Bearer <token>' or the session cookie "
            "from POST /api/v1/auth/login (a large body is read only from a signed-in caller)"
        )
        headers = [(b"www-authenticate", b'Bearer realm="loaxa"')]
        await _answer_json(send, 401, {"detail": detail}, headers)

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        content: dict[str, object] = {"detail": refusal.detail}
        if self._is_page(scope) and refusal.page_message is not None:
            rule = self.limit_for(scope["method"], scope["path"])
            language = pick_language(cookie_value(Headers(scope=scope), LANGUAGE_COOKIE))
            text = translations(language).gettext(refusal.page_message) % (refusal.params or {})
            content["errors"] = {rule.page_field or "form": text}
        await _answer_json(send, refusal.status, content, [])


def _declared_length(headers: Headers) -> int | Literal["invalid"] | None:
    value = headers.get("content-length")
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else "invalid"


def cookie_value(headers: Headers, name: str) -> str | None:
    """The value of cookie ``name``, read without parsing the body or building a Request."""
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _answer_json(
    send: Send, status: int, content: dict[str, object], headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(content, ensure_ascii=False).encode()
    await _answer(send, status, body, [(b"content-type", b"application/json"), *headers])


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer and close: the unread body must not be taken for the next request."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
