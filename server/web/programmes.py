"""The programme calendar: a week at a glance, and the form that builds a programme.

The week runs Monday to Sunday in Vietnam's time (Thứ 2 … Chủ nhật). The form is a
plain HTML form posted to this server (items, timing, targets: see
``server.web.programme_form``), validated here field by field; every error, the page's
own or the server's refusal (``server.web.refusals``), is shown under its field in the
reader's language. It saves through the same code as the API: one file once to whole
communes is a bulletin (``POST /api/v1/broadcasts``), anything else a programme
(``POST /api/v1/programmes``, a draft until approved).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from loaxa_protocol.messages import Priority
from server.api.broadcasts import create_broadcast
from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import visible_areas
from server.auth.permissions import Action
from server.context import ServerContext
from server.i18n import N_, gettext
from server.models import AudioAsset, Broadcast, BroadcastCreate, BroadcastTarget, Station
from server.programmes import editing, views
from server.programmes.access import may_approve, visible_programme
from server.programmes.approval import ApprovalAction, ApprovalError
from server.programmes.models import Programme, StationGroup
from server.programmes.recurrence import RecurrenceError
from server.programmes.service import ProgrammeError, timing_of
from server.programmes.spec import ProgrammeSpec
from server.tts.errors import TtsError
from server.web.common import LOCAL_TZ, PageActorDep, PageRoute, area_names, may_somewhere, render
from server.web.programme_form import (
    FORM_PRIORITIES,
    ITEM_KINDS,
    ItemForm,
    ProgrammeForm,
    apply_op,
    check,
    day_text,
    form_of_spec,
    items_from_lists,
    owner_area,
    spec_of,
)
from server.web.recurrence_words import WEEKDAY_NAMES
from server.web.refusals import explain
from server.web.review import review, when_words

router = APIRouter(route_class=PageRoute)

WEEKDAYS = WEEKDAY_NAMES
PROGRAMME_STATES = {
    "draft": N_("Draft: not on the air"),
    "submitted": N_("Waiting for approval"),
    "approved": N_("Approved: on the air"),
    "rejected": N_("Rejected"),
    "archived": N_("Archived"),
}
PLAYED_LABEL = N_("Approved: played, it will not play again")
PASSED_LABEL = N_("Approved: its time has passed, no station reported playing it")
OCCURRENCE_PLAYED = N_("Played")
OCCURRENCE_UNREPORTED = N_("Time passed, no station reported playing it")
CALENDAR_STATES = ("draft", "submitted", "approved")
STATIONS_SHOWN = 500


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


@dataclass
class CalendarItem:
    """One entry drawn in a day column."""

    at: datetime
    title: str
    href: str
    kind: str
    detail: str = ""
    state: str = ""


@dataclass
class Day:
    day: date
    weekday: str
    items: list[CalendarItem] = field(default_factory=list)
    today: bool = False


PRIORITY_NAMES = {
    "live": N_("Live"),
    "priority": N_("Priority"),
    "normal": N_("Normal"),
    "background": N_("Relay / background"),
}


def week_broadcasts(
    session: Session, actor: Actor, start: datetime, end: datetime
) -> list[CalendarItem]:
    """One-off bulletins reaching the reader's stations in [start, end)."""
    scope = visible_areas(actor, Action.BROADCAST_READ, session)
    reaching = (
        select(BroadcastTarget.broadcast_id)
        .join(Station, col(Station.id) == col(BroadcastTarget.station_id))
        .where(col(Station.area_code).in_(scope))
    )
    rows = session.exec(
        select(Broadcast)
        .where(col(Broadcast.id).in_(reaching))
        .where(col(Broadcast.start_at) >= start, col(Broadcast.start_at) < end)
        .order_by(col(Broadcast.start_at))
    ).all()
    return [
        CalendarItem(
            at=b.start_at,
            title=b.title or gettext("(untitled)"),
            href=f"/broadcasts/{b.id}",
            kind="broadcast",
            detail=gettext(PRIORITY_NAMES.get(b.priority.value, b.priority.value)),
            state="approved",
        )
        for b in rows
    ]


def week_programmes(
    session: Session, actor: Actor, start: datetime, end: datetime, now: datetime
) -> list[CalendarItem]:
    """Each occurrence in [start, end) of every programme the reader sees and that may air.

    Occurrences before a programme was written never existed and are left out; an
    approved one whose time has passed says whether a station reported playing it.
    """
    items = []
    for programme in views.list_programmes(session, actor, limit=500):
        if str(programme.state) not in CALENDAR_STATES or programme.proposal:
            continue
        assert programme.id is not None
        spec = ProgrammeSpec.model_validate(programme.spec)
        label = gettext(PROGRAMME_STATES[str(programme.state)])
        length = timedelta(milliseconds=programme.duration_ms)
        starts = views.since_creation(programme, timing_of(spec).between(start, end, 100))
        past = [t for t in starts if t + length <= now and str(programme.state) == "approved"]
        outcomes = views.occurrence_outcomes(session, programme.id, past) if past else {}
        for at in starts:
            detail = label
            if at in past:
                heard = outcomes.get(at, {}).get("played", 0) > 0
                detail = gettext(OCCURRENCE_PLAYED if heard else OCCURRENCE_UNREPORTED)
            items.append(
                CalendarItem(
                    at=at,
                    title=programme.title,
                    href=f"/programmes/p/{programme.id}",
                    kind="programme",
                    detail=detail,
                    state=str(programme.state),
                )
            )
    return items


def calendar_items(
    session: Session, actor: Actor, start: datetime, end: datetime, now: datetime
) -> list[CalendarItem]:
    if not may_somewhere(actor, Action.BROADCAST_READ):
        return []
    items = week_broadcasts(session, actor, start, end) + week_programmes(
        session, actor, start, end, now
    )
    return sorted(items, key=lambda item: item.at)


@router.get("/programmes", response_class=HTMLResponse)
def calendar_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    week: str | None = None,
) -> HTMLResponse:
    """The week containing ``week`` (any date, ``YYYY-MM-DD``), this week by default."""
    now = context.clock()
    today = now.astimezone(LOCAL_TZ).date()
    try:
        chosen = date.fromisoformat(week) if week else today
    except ValueError:
        chosen = today
    monday = week_start(chosen)
    start = datetime.combine(monday, time(0), LOCAL_TZ)
    days = [
        Day(monday + timedelta(days=i), WEEKDAYS[i], today=monday + timedelta(days=i) == today)
        for i in range(7)
    ]
    for item in calendar_items(session, actor, start, start + timedelta(days=7), now):
        days[item.at.astimezone(LOCAL_TZ).weekday()].items.append(item)
    values: dict[str, Any] = {
        "actor": actor,
        "days": days,
        "monday": monday,
        "sunday": monday + timedelta(days=6),
        "prev_week": (monday - timedelta(days=7)).isoformat(),
        "next_week": (monday + timedelta(days=7)).isoformat(),
        "this_week": week_start(today).isoformat(),
        "can_create": may_somewhere(actor, Action.BROADCAST_CREATE),
        "programmes": [
            _programme_row(session, p, now)
            for p in (
                views.list_programmes(session, actor, limit=100)
                if may_somewhere(actor, Action.BROADCAST_READ)
                else []
            )
            if str(p.state) != "archived"
        ],
    }
    return render(request, "programmes.html", values)


def state_label(session: Session, programme: Programme, now: datetime) -> tuple[str, Any]:
    """The state in words, true to what happened: an approved one-off (or ended series)
    whose time has passed says it played, or that no station reported playing it.
    Returns the msgid and the last airing (None unless it will not play again)."""
    airing = views.last_airing(session, programme, now)
    if airing is None:
        return PROGRAMME_STATES[str(programme.state)], None
    return (PLAYED_LABEL if airing.played else PASSED_LABEL), airing


def _programme_row(session: Session, programme: Programme, now: datetime) -> dict[str, Any]:
    spec = ProgrammeSpec.model_validate(programme.spec)
    label, _airing = state_label(session, programme, now)
    return {
        "id": programme.id,
        "title": programme.title,
        "when": when_words(spec),
        "state": str(programme.state),
        "state_label": label,
    }


# ------------------------------------------------------------------ the form


def target_choices(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """The communes where the reader may schedule, each with its number of stations."""
    scope = visible_areas(actor, Action.BROADCAST_CREATE, session)
    counts = dict(
        session.exec(
            select(Station.area_code, func.count())
            .where(col(Station.area_code).in_(scope))
            .group_by(col(Station.area_code))
        ).all()
    )
    names = area_names(session, set(counts))
    return [
        {"code": code, "name": names.get(code, code), "stations": n}
        for code, n in sorted(counts.items(), key=lambda kv: names.get(kv[0], kv[0]))
    ]


@dataclass
class Choices:
    """Where the reader may schedule: communes, single stations and station groups."""

    areas: list[dict[str, Any]]
    stations: list[Station]
    groups: list[StationGroup]

    @property
    def allowed(self) -> dict[str, set[str]]:
        return {
            "areas": {a["code"] for a in self.areas},
            "stations": {s.id for s in self.stations},
            "groups": {g.name for g in self.groups},
        }


def stations_and_groups(
    session: Session, scope: set[str], limit: int = STATIONS_SHOWN
) -> tuple[list[Station], list[StationGroup]]:
    """What a target picker lists in ``scope``: stations by area and name, then groups."""
    stations = session.exec(
        select(Station)
        .where(col(Station.area_code).in_(scope))
        .order_by(col(Station.area_code), col(Station.name))
        .limit(limit)
    ).all()
    groups = session.exec(
        select(StationGroup)
        .where(col(StationGroup.area_code).in_(scope))
        .order_by(col(StationGroup.name))
    ).all()
    return list(stations), list(groups)


def choices_for(session: Session, actor: Actor) -> Choices:
    scope = visible_areas(actor, Action.BROADCAST_CREATE, session)
    stations, groups = stations_and_groups(session, scope)
    return Choices(target_choices(session, actor), stations, groups)


def _form_page(
    request: Request,
    session: Session,
    actor: Actor,
    form: ProgrammeForm,
    errors: dict[str, str] | None = None,
    code: int = 200,
    programme_id: int | None = None,
) -> HTMLResponse:
    audio = session.exec(select(AudioAsset).order_by(col(AudioAsset.id).desc()).limit(200)).all()
    choices = choices_for(session, actor)
    values: dict[str, Any] = {
        "actor": actor,
        "form": form,
        "errors": errors or {},
        "audio": audio,
        "targets": choices.areas,
        "stations": choices.stations,
        "groups": choices.groups,
        "area_names": {a["code"]: a["name"] for a in choices.areas},
        "priorities": [(p.value, PRIORITY_NAMES[p.value]) for p in FORM_PRIORITIES],
        "weekdays": list(enumerate(WEEKDAYS)),
        "item_kinds": ITEM_KINDS,
        "programme_id": programme_id,
        "action": f"/programmes/p/{programme_id}/edit" if programme_id else "/programmes/new",
    }
    return render(request, "programme_form.html", values, status_code=code)


@router.get("/programmes/new", response_class=HTMLResponse)
def new_bulletin(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    audio_id: str = "",
) -> HTMLResponse:
    soon = (context.clock() + timedelta(hours=1)).astimezone(LOCAL_TZ)
    form = ProgrammeForm(
        day=day_text(soon.date()),
        at=soon.strftime("%H:00"),
        days=[str(d) for d in range(6)],  # Monday to Saturday, if they choose "weekly"
        items=[ItemForm(kind="audio", audio=audio_id)],
    )
    choices = target_choices(session, actor)
    if len(choices) == 1:  # a commune clerk: their commune is the only choice
        form.areas = [choices[0]["code"]]
    return _form_page(request, session, actor, form)


def posted_form(
    title: Annotated[str, Form()] = "",
    audio_id: Annotated[str, Form()] = "",
    day: Annotated[str, Form()] = "",
    at: Annotated[str, Form()] = "",
    priority: Annotated[str, Form()] = Priority.NORMAL.value,
    areas: Annotated[list[str] | None, Form()] = None,
    stations: Annotated[list[str] | None, Form()] = None,
    groups: Annotated[list[str] | None, Form()] = None,
    repeat: Annotated[str, Form()] = "once",
    days: Annotated[list[str] | None, Form()] = None,
    item_kind: Annotated[list[str] | None, Form()] = None,
    item_audio: Annotated[list[str] | None, Form()] = None,
    item_text: Annotated[list[str] | None, Form()] = None,
    item_url: Annotated[list[str] | None, Form()] = None,
    item_minutes: Annotated[list[str] | None, Form()] = None,
    item_fallback: Annotated[list[str] | None, Form()] = None,
    item_seconds: Annotated[list[str] | None, Form()] = None,
    item_volume: Annotated[list[str] | None, Form()] = None,
    item_repeat: Annotated[list[str] | None, Form()] = None,
) -> ProgrammeForm:
    """The posted form as typed: every item row is one entry of each ``item_*`` list."""
    lists = {
        "kind": item_kind or [],
        "audio": item_audio or [],
        "text": item_text or [],
        "url": item_url or [],
        "minutes": item_minutes or [],
        "fallback": item_fallback or [],
        "seconds": item_seconds or [],
        "volume": item_volume or [],
        "repeat": item_repeat or [],
    }
    return ProgrammeForm(
        title=title,
        day=day,
        at=at,
        priority=priority,
        repeat=repeat,
        days=days or [],
        areas=areas or [],
        stations=stations or [],
        groups=groups or [],
        items=items_from_lists(lists, audio_id),
    )


PostedForm = Annotated[ProgrammeForm, Depends(posted_form)]


def _preview(context: ServerContext, actor: Actor, form: ProgrammeForm, op: str) -> dict[str, str]:
    """``preview:N``: what text-to-speech will actually say for item N (numbers, dates
    and abbreviations written out) and a player to hear it, or why it cannot. The speech
    is rendered once and kept: the stations later get this very file."""
    _verb, _, arg = op.partition(":")
    if not arg.isdigit() or not 1 <= int(arg) <= len(form.items):
        return {}
    item = form.items[int(arg) - 1]
    try:
        with Session(context.engine) as speech_session:
            rendering = context.tts.render_detailed(
                speech_session, item.text.strip(), None, actor=actor
            )
            item.spoken = rendering.normalised_text
            item.listen = f"/audio/{rendering.asset.id}/listen"
    except TtsError as exc:
        return {f"items.{arg}.text": explain(exc).text}
    return {}


def _submit(
    request: Request,
    session: Session,
    context: ServerContext,
    actor: Actor,
    form: ProgrammeForm,
    op: str,
    programme: Programme | None,
) -> Response:
    """Add/remove/preview an item (the form again), or check and save."""
    programme_id = programme.id if programme is not None else None
    if apply_op(form, op):
        return _form_page(request, session, actor, form, programme_id=programme_id)
    if op.startswith("preview:"):
        errors = _preview(context, actor, form, op)
        return _form_page(request, session, actor, form, errors, programme_id=programme_id)
    choices = choices_for(session, actor)
    audio_ids = {a for a in session.exec(select(AudioAsset.id)).all() if a is not None}
    errors, checked = check(form, context.clock(), LOCAL_TZ, choices.allowed, audio_ids)
    if checked is None:
        return _form_page(request, session, actor, form, errors, 422, programme_id)
    try:
        if programme is None and form.one_file_bulletin:
            body = BroadcastCreate(
                audio_id=int(form.items[0].audio),
                start_at=checked.start_local.replace(tzinfo=LOCAL_TZ),
                priority=Priority(form.priority),
                title=form.title.strip(),
                area_codes=form.areas,
            )
            bulletin = create_broadcast(body, session, context.publisher, context.clock, actor)
            return RedirectResponse(f"/broadcasts/{bulletin.id}", status.HTTP_303_SEE_OTHER)
        area = owner_area(
            form,
            {s.id: s.area_code for s in choices.stations},
            {g.name: g.area_code for g in choices.groups},
        )
        if programme is None:
            key = f"web-{checked.start_local:%Y%m%d-%H%M}-{secrets.token_hex(3)}"
            saved = editing.create(session, context, actor, spec_of(form, checked, key, area))
        else:
            assert programme.id is not None
            saved = editing.update(
                session, context, actor, programme.id, spec_of(form, checked, programme.key, area)
            )
    except (HTTPException, ProgrammeError, RecurrenceError, TtsError) as exc:
        session.rollback()
        code = exc.status_code if isinstance(exc, HTTPException) else getattr(exc, "status", 422)
        return _form_page(request, session, actor, form, _refusal(exc), code, programme_id)
    except ApprovalError as exc:
        session.rollback()
        return _form_page(request, session, actor, form, _refusal(exc), 409, programme_id)
    except ValidationError as exc:
        session.rollback()
        return _form_page(request, session, actor, form, _invalid(exc), 422, programme_id)
    target = f"/programmes/p/{saved.id}"
    if saved.warnings:
        target += "?warned=stream"
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


def _refusal(exc: Exception) -> dict[str, str]:
    """The server's refusal in the reader's words, under the field it is about."""
    code = exc.status_code if isinstance(exc, HTTPException) else getattr(exc, "status", 0)
    if code == status.HTTP_403_FORBIDDEN:
        refusal = explain(exc)
        words = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
        if refusal.field == "form" and "outside your area" not in words:
            return {"targets": gettext("Your account may not schedule this there.")}
        return refusal.as_errors()
    return explain(exc).as_errors()


def _invalid(exc: ValidationError) -> dict[str, str]:
    """A spec the page's checks let through but the model refused (should not happen)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return {"form": gettext("The server refused it: %(why)s") % {"why": f"{where}: {first['msg']}"}}


@router.post("/programmes/new", response_class=HTMLResponse)
def create_bulletin(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    form: PostedForm,
    op: Annotated[str, Form()] = "save",
) -> Response:
    """One file once to communes: a bulletin, on the air at once. Anything else (several
    items, text, a relay, silence, weekly, single stations or groups): a programme,
    saved as a draft that airs once approved."""
    return _submit(request, session, context, actor, form, op, None)


# ------------------------------------------------------------------ one programme


def _programme_or_404(session: Session, actor: Actor, programme_id: int) -> Programme:
    try:
        return visible_programme(session, actor, programme_id)
    except ProgrammeError as exc:
        raise HTTPException(exc.status, str(exc)) from exc


def _form_of(programme: Programme) -> ProgrammeForm | None:
    """The form for a programme the form could have made."""
    return form_of_spec(ProgrammeSpec.model_validate(programme.spec))


@router.get("/programmes/p/{programme_id}", response_class=HTMLResponse)
def programme_page(
    request: Request,
    programme_id: int,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    error: str = "",
    warned: str = "",
    done: str = "",
) -> HTMLResponse:
    """One programme as an approver must see it: every item with a player, the stations
    by name, the timing in words with the next times, who submitted it and what changed
    since it was last approved."""
    programme = _programme_or_404(session, actor, programme_id)
    now = context.clock()
    detail = views.detail(session, programme, now)
    spec = ProgrammeSpec.model_validate(programme.spec)
    state = str(programme.state)
    label, airing = state_label(session, programme, now)
    values: dict[str, Any] = {
        "actor": actor,
        "programme": programme,
        "state": state,
        "state_label": label,
        "airing": airing,
        "when": when_words(spec),
        "first": spec.start,
        "next": detail.next_occurrences,
        "stations": detail.stations,
        "editable": _form_of(programme) is not None and state != "archived",
        "can_edit": programme.area_code in visible_areas(actor, Action.PROGRAMME_EDIT, session),
        "can_approve": may_approve(session, actor, programme),
        "error": error,
        "warned": warned == "stream",
        "done": done if done in DONE_NOTICES else "",
        "DONE_NOTICES": DONE_NOTICES,
        **review(session, programme, spec),
    }
    return render(request, "programme.html", values)


@router.get("/programmes/p/{programme_id}/edit", response_class=HTMLResponse)
def edit_programme(
    request: Request, programme_id: int, session: SessionDep, actor: PageActorDep
) -> Response:
    programme = _programme_or_404(session, actor, programme_id)
    form = _form_of(programme)
    if form is None:
        return RedirectResponse(f"/programmes/p/{programme_id}", status.HTTP_303_SEE_OTHER)
    return _form_page(request, session, actor, form, programme_id=programme_id)


@router.post("/programmes/p/{programme_id}/edit", response_class=HTMLResponse)
def save_programme(
    request: Request,
    programme_id: int,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    form: PostedForm,
    op: Annotated[str, Form()] = "save",
) -> Response:
    programme = _programme_or_404(session, actor, programme_id)
    return _submit(request, session, context, actor, form, op, programme)


MOVES = {
    "submit": ApprovalAction.SUBMIT,
    "approve": ApprovalAction.APPROVE,
    "reject": ApprovalAction.REJECT,
    "archive": ApprovalAction.ARCHIVE,
}
DONE_NOTICES = {
    "submit": N_("Sent for approval. It plays once an approver approves it."),
    "approve": N_("Approved. It is on the air: its loudspeakers have the new schedule."),
    "reject": N_("Rejected. The writer sees your reason."),
    "archive": N_("Archived. It will not play again."),
}


@router.post("/programmes/p/{programme_id}/{action}")
def move_programme(
    programme_id: int,
    action: str,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    reason: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Submit for approval, approve, reject (with a reason) or archive; the page then says
    what was done."""
    back = f"/programmes/p/{programme_id}"
    move = MOVES.get(action)
    if move is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {action!r}")
    why = reason.strip()[:500]
    if move == ApprovalAction.REJECT and len(why) < 3:
        return RedirectResponse(f"{back}?error=reason", status.HTTP_303_SEE_OTHER)
    try:
        editing.move(
            session,
            context,
            actor,
            programme_id,
            move,
            why if move == ApprovalAction.REJECT else None,
        )
    except (ProgrammeError, RecurrenceError, ApprovalError) as exc:
        session.rollback()
        code = exc.status if isinstance(exc, ProgrammeError) else 409
        if code == status.HTTP_404_NOT_FOUND:
            raise HTTPException(code, str(exc)) from exc
        error = "denied" if code == status.HTTP_403_FORBIDDEN else "state"
        return RedirectResponse(f"{back}?error={error}", status.HTTP_303_SEE_OTHER)
    return RedirectResponse(f"{back}?done={action}", status.HTTP_303_SEE_OTHER)
