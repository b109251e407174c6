"""Named dependencies: routes ask for what they use, tests build the app with their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlmodel import Session

from server.context import ServerContext
from server.planning.publisher import PlanPublisher
from server.settings import Settings


def get_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.context
    return context


ContextDep = Annotated[ServerContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with Session(context.engine) as session:
        yield session


def get_settings(context: ContextDep) -> Settings:
    return context.settings


def get_publisher(context: ContextDep) -> PlanPublisher:
    return context.publisher


def get_clock(context: ContextDep) -> Callable[[], datetime]:
    return context.clock


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PublisherDep = Annotated[PlanPublisher, Depends(get_publisher)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]


MAX_DB_ID = 2**63 - 1
"""The largest integer key a database column holds; a larger id is a 422, not a crash."""
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="a database id")]
