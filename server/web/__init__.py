"""The operators' web pages, one module per family of pages, all server-rendered.

Vietnamese by default (see ``server.i18n``), a few small scripts for the live parts,
everything served by this server (no CDN, no web fonts). Each page needs a signed-in
user and shows only what the user's roles cover, through the same checks as the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.web import (
    admin,
    alerts,
    audio,
    auth,
    dashboard,
    enrolment,
    fleet,
    listen,
    live,
    programmes,
    reports,
    review,
    updates,
)
from server.web.common import STATIC_FILES, use_request_language

router = APIRouter(include_in_schema=False, dependencies=[Depends(use_request_language)])
PAGES = (
    auth,
    dashboard,
    fleet,
    enrolment,
    updates,
    audio,
    review,
    programmes,
    reports,
    listen,
    alerts,
    live,
    admin,
)
for module in PAGES:
    router.include_router(module.router)

__all__ = ["STATIC_FILES", "router"]
