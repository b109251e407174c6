"""Refuse oversized uploads while they arrive, not after they have filled the disk.

Starlette spools a multipart body to a temporary file before the route runs, so a
check inside the route comes too late to protect the server. This ASGI middleware
answers 413 at once when Content-Length is too big and stops reading a body sent
without one as soon as it passes the limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Multipart boundaries and part headers around the file itself.
MULTIPART_SLACK_BYTES = 64 * 1024


def too_large_detail(limit_bytes: int) -> str:
    return (
        f"upload too large: the limit is {limit_bytes} bytes "
        f"({limit_bytes / 1024 / 1024:.1f} MiB, setting max_upload_bytes)"
    )


class UploadLimitMiddleware:
    """Caps request bodies sent with ``method`` to ``path``."""

    def __init__(self, app: ASGIApp, path: str, method: str, limit_bytes: int) -> None:
        self.app = app
        self.path = path
        self.method = method
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != self.method
            or scope["path"].rstrip("/") != self.path
        ):
            await self.app(scope, receive, send)
            return
        body_limit = self.limit_bytes + MULTIPART_SLACK_BYTES
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > body_limit:
            await self._refuse(send)
            return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > body_limit:
                    exceeded = True
                    # Looks like a client that went away: the app stops parsing.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": too_large_detail(self.limit_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
