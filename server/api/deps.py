"""Named dependencies: routes ask for what they use, tests build the app with their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from server.context import ServerContext
from server.planning.publisher import PlanPublisher
from server.settings import Settings

# The trivial dependencies are ``async def``: FastAPI runs a plain ``def`` dependency on
# its thread pool, and each such hop adds a fraction of a millisecond to every request
# (issue 17: a broadcast reaches its stations in milliseconds). None of them blocks.


async def get_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.context
    return context


ContextDep = Annotated[ServerContext, Depends(get_context)]


async def get_session(context: ContextDep) -> AsyncIterator[Session]:
    session = Session(context.engine)  # no connection until its first statement
    try:
        yield session
    finally:
        # Closing may roll back on the database: that waits on the pool, not the loop.
        await run_in_threadpool(session.close)


async def get_settings(context: ContextDep) -> Settings:
    return context.settings


async def get_publisher(context: ContextDep) -> PlanPublisher:
    return context.publisher


async def get_clock(context: ContextDep) -> Callable[[], datetime]:
    return context.clock


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PublisherDep = Annotated[PlanPublisher, Depends(get_publisher)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]


MAX_DB_ID = 2**63 - 1
"""The largest integer key a database column holds; a larger id is a 422, not a crash."""
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="a database id")]
