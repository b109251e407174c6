"""Every error is JSON ``{"detail": "<what is wrong, and where>"}``, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


def describe(error: dict[str, Any]) -> str:
    """One validation error as ``field: message``, without pydantic's boilerplate."""
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
    where = ".".join(loc)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not where or message.startswith(where):
        return message
    return f"{where}: {message}"


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={
            "detail": "; ".join(describe(e) for e in errors) or "invalid request",
            "errors": [
                {"loc": list(e.get("loc", ())), "msg": describe(e), "type": e.get("type")}
                for e in errors
            ],
        },
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content={"detail": "internal server error; the server log has the details"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
