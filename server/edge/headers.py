"""Security headers on every answer, pages and API alike.

The pages load scripts and styles only from ``/static`` (no inline ``<script>``, no
``on…=`` handlers, no ``style=``), so the policy can forbid everything inline: a name or
a bulletin title that smuggles in markup cannot run. ``tests/integration/
test_security_headers.py`` renders every page family and fails on any inline script.
The API answers only data and gets a policy that allows nothing at all. FastAPI's own
documentation pages (``/docs``, ``/redoc``) are the one exception: they are built with an
inline script and load Swagger UI / ReDoc from a CDN.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",  # a microphone recording is played back from a blob URL
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ]
)
DOCS_PATHS = ("/docs", "/redoc")

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def policy_for(path: str, api_prefix: str) -> str:
    if path.startswith(DOCS_PATHS):
        return DOCS_POLICY
    if path.startswith(api_prefix + "/") or path == "/openapi.json":
        return API_POLICY
    return PAGE_POLICY


class SecurityHeadersMiddleware:
    """Adds the headers to every HTTP answer that does not already set them."""

    def __init__(self, app: ASGIApp, api_prefix: str) -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = {**COMMON, "content-security-policy": policy_for(scope["path"], self.api_prefix)}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
