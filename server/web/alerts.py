"""Emergency alerts: compose, see exactly who will hear it, confirm, watch it arrive.

Three steps on plain forms, all validated here: the reader writes the alert, the
server answers with exactly which stations in which communes will sound it (the same
``preview`` as the API), and only an explicit "Send now" sends it. The alert's page
then follows the server-sent event stream of ``GET /api/v1/alerts/{id}/stream`` and
moves one progress bar per step (received, playing, finished) until every station is
done; the same page cancels it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from loaxa_protocol.messages import AlertSeverity
from server.alerts import canned as library
from server.alerts.models import AlertCreate, AlertRecord, AlertStationPublic
from server.api import alerts as api
from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import authorize, visible_areas
from server.auth.permissions import Action
from server.i18n import N_, current_language, gettext
from server.i18n.reasons import STATION_REASONS
from server.models import Area, AudioAsset, Station
from server.web.common import PageActorDep, PageRoute, done, may_somewhere, render
from server.web.fleet import FLEET_LABELS, fleet_state
from server.web.refusals import explain

router = APIRouter(route_class=PageRoute)

SEVERITY_NAMES = {
    "extreme": N_("Extreme: danger to life"),
    "severe": N_("Severe"),
    "moderate": N_("Moderate"),
    "minor": N_("Minor"),
}
ALERT_STATE_NAMES = {
    "awaiting_confirmation": N_("Waiting for a second officer"),
    "active": N_("On the air"),
    "finished": N_("Finished"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
}
DELIVERY_NAMES = {
    "pending": N_("Not yet received"),
    "received": N_("Received"),
    "playing": N_("Playing"),
    "finished": N_("Played"),
    "failed": N_("Failed"),
    "refused": N_("Refused"),
    "cancelled": N_("Cancelled"),
}
CONTENT_KINDS = ("canned", "text", "audio")
SHOWN_ALERTS = 50
OPEN_STATES = frozenset({"awaiting_confirmation", "active"})
"""States of the alert contract in which it can still sound (or be confirmed)."""


@dataclass
class AlertForm:
    """The compose form as typed (text), so a refused form comes back unchanged."""

    title: str = ""
    severity: str = AlertSeverity.SEVERE.value
    kind: str = "canned"
    canned: str = ""
    text: str = ""
    audio_id: str = ""
    repeat: str = "2"
    tone: bool = True
    drill: bool = False
    areas: list[str] = field(default_factory=list)


ALERT_TEXT_MAX = 2000
"""as ``AlertCreate.text`` allows"""


def live_alerts(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """Open alerts reaching the reader's areas, for the overview."""
    if not may_somewhere(actor, Action.BROADCAST_READ):
        return []
    open_states = sorted(OPEN_STATES)
    rows = session.exec(
        select(AlertRecord)
        .where(col(AlertRecord.state).in_(open_states))
        .order_by(col(AlertRecord.created_at).desc())
    ).all()
    visible = visible_areas(actor, Action.BROADCAST_READ, session)
    shown = []
    for record in rows:
        if not (api._scope_of(session, record) & visible):
            continue
        shown.append(
            {
                "id": record.id,
                "title": record.title,
                "drill": record.drill,
                "state_label": ALERT_STATE_NAMES.get(record.state, record.state),
                "sent_at": record.sent_at or record.created_at,
            }
        )
    return shown


def area_choices(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """Areas the reader may alert that hold stations: province, districts, communes."""
    scope = visible_areas(actor, Action.ALERT_SEND, session)
    if not scope:
        return []
    areas = {a.code: a for a in session.exec(select(Area).where(col(Area.code).in_(scope)))}
    direct = Counter(
        session.exec(select(Station.area_code).where(col(Station.area_code).in_(scope))).all()
    )
    totals: Counter[str] = Counter()
    for code, n in direct.items():
        walk: str | None = code
        while walk is not None and walk in areas:
            totals[walk] += n
            walk = areas[walk].parent_code
    order = {"province": 0, "district": 1, "commune": 2}
    return sorted(
        (
            {
                "code": code,
                "name": areas[code].name,
                "level": str(areas[code].level.value),
                "stations": n,
            }
            for code, n in totals.items()
        ),
        key=lambda a: (order.get(a["level"], 3), a["name"]),
    )


def canned_choices(session: Session) -> list[dict[str, str]]:
    assets = library.library_assets(session)
    english = current_language() == "en"
    return [
        {"name": m.name, "title": m.title_en if english else m.title_vi}
        for m in library.MESSAGES
        if m.name in assets
    ]


def _form_from(
    title: str,
    severity: str,
    kind: str,
    canned: str,
    text: str,
    audio_id: str,
    repeat: str,
    tone: str,
    drill: str,
    areas: list[str] | None,
) -> AlertForm:
    return AlertForm(
        title=title.strip(),
        severity=severity,
        kind=kind,
        canned=canned,
        text=text.strip(),
        audio_id=audio_id,
        repeat=repeat,
        tone=bool(tone),
        drill=bool(drill),
        areas=areas or [],
    )


def validate_alert(form: AlertForm, allowed: set[str]) -> tuple[dict[str, str], AlertCreate | None]:
    """Field by field, in the reader's words; the API model checks the rest again."""
    errors: dict[str, str] = {}
    if not form.title:
        errors["title"] = gettext("Write a short title, e.g. “Typhoon No. 3 is coming”.")
    elif len(form.title) > 200:
        errors["title"] = gettext("The title is too long: at most 200 characters.")
    if form.severity not in SEVERITY_NAMES:
        errors["severity"] = gettext("Choose a severity from the list.")
    content: dict[str, Any] = {}
    if form.kind == "canned":
        if form.canned not in library.BY_NAME:
            errors["canned"] = gettext("Choose one of the recorded messages.")
        content["canned"] = form.canned
    elif form.kind == "text":
        if not form.text:
            errors["text"] = gettext("Write the text to be read aloud.")
        elif len(form.text) > ALERT_TEXT_MAX:
            errors["text"] = gettext("The text is too long: at most %(n)s characters.") % {
                "n": ALERT_TEXT_MAX
            }
        content["text"] = form.text
    elif form.kind == "audio":
        if not form.audio_id.isdigit():
            errors["audio_id"] = gettext("Choose an audio file.")
        else:
            content["audio_id"] = int(form.audio_id)
    else:
        errors["kind"] = gettext("Choose what the loudspeakers will say.")
    try:
        repeat = int(form.repeat)
    except ValueError:
        repeat = 0
    if not 1 <= repeat <= 10:
        errors["repeat"] = gettext("Repeat from 1 to 10 times.")
    if not form.areas:
        errors["areas"] = gettext("Choose at least one area.")
    elif set(form.areas) - allowed:
        errors["areas"] = gettext("You may not alert some of the chosen areas.")
    if errors:
        return errors, None
    try:
        body = AlertCreate(
            title=form.title,
            severity=AlertSeverity(form.severity),
            tone=form.tone,
            repeat=repeat,
            area_codes=form.areas,
            drill=form.drill,
            **content,
        )
    except ValidationError as exc:
        return {"form": "; ".join(str(e["msg"]) for e in exc.errors())}, None
    return {}, body


def _compose(
    request: Request,
    session: Session,
    actor: Actor,
    form: AlertForm,
    errors: dict[str, str] | None = None,
    preview: Any = None,
    code: int = 200,
) -> HTMLResponse:
    audio = session.exec(select(AudioAsset).order_by(col(AudioAsset.id).desc()).limit(100)).all()
    values: dict[str, Any] = {
        "actor": actor,
        "form": form,
        "errors": errors or {},
        "preview": preview,
        "areas": area_choices(session, actor),
        "canned": canned_choices(session),
        "audio": audio,
        "severities": SEVERITY_NAMES,
        "area_names": {
            a.code: a.name for a in session.exec(select(Area).where(col(Area.code).in_(form.areas)))
        },
    }
    return render(request, "alert_form.html", values, status_code=code)


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    alerts = api.read_alerts(session, actor, SHOWN_ALERTS)
    values: dict[str, Any] = {
        "actor": actor,
        "alerts": alerts,
        "can_send": may_somewhere(actor, Action.ALERT_SEND),
        "ALERT_STATE_NAMES": ALERT_STATE_NAMES,
        "SEVERITY_NAMES": SEVERITY_NAMES,
    }
    return render(request, "alerts.html", values)


@router.get("/alerts/new", response_class=HTMLResponse)
def new_alert(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    authorize(actor, Action.ALERT_SEND, None, session)
    form = AlertForm()
    choices = area_choices(session, actor)
    if len(choices) == 1:
        form.areas = [choices[0]["code"]]
    return _compose(request, session, actor, form)


ALERT_FIELDS = {"title", "severity", "kind", "canned", "text", "audio_id", "repeat", "areas"}


def _alert_field(name: str) -> str:
    """A refusal's field on the alert form (targets are the areas; others: the form)."""
    if name in ("targets", "station_ids", "area_codes"):
        return "areas"
    return name if name in ALERT_FIELDS else "form"


@router.post("/alerts/new", response_class=HTMLResponse)
def submit_alert(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    step: Annotated[str, Form()] = "preview",
    title: Annotated[str, Form()] = "",
    severity: Annotated[str, Form()] = AlertSeverity.SEVERE.value,
    kind: Annotated[str, Form()] = "canned",
    canned: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
    audio_id: Annotated[str, Form()] = "",
    repeat: Annotated[str, Form()] = "2",
    tone: Annotated[str, Form()] = "",
    drill: Annotated[str, Form()] = "",
    areas: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """``step=preview`` shows who will hear it; ``step=send`` sends (after the preview)."""
    form = _form_from(title, severity, kind, canned, text, audio_id, repeat, tone, drill, areas)
    allowed = {a["code"] for a in area_choices(session, actor)}
    errors, body = validate_alert(form, allowed)
    if body is None:
        return _compose(request, session, actor, form, errors, code=422)
    try:
        if step != "send":
            preview = api.preview_alert(body, session, context, actor)
            return _compose(request, session, actor, form, preview=preview)
        created = api.create_alert(body, session, context, actor)
    except HTTPException as exc:
        session.rollback()
        if exc.status_code == status.HTTP_403_FORBIDDEN:
            errors = {"areas": gettext("Your account may not send an alert to these areas.")}
        else:
            errors = explain(exc, _alert_field).as_errors()
        return _compose(request, session, actor, form, errors, code=exc.status_code)
    return RedirectResponse(f"/alerts/{created.id}", status.HTTP_303_SEE_OTHER)


REACHED = frozenset({"received", "playing", "finished"})


def reached(row: AlertStationPublic) -> bool:
    """The station has the alert (it said so, or it played it)."""
    return row.received_at is not None or row.playing_at is not None or str(row.state) in REACHED


def delivery_counts(stations: Iterable[AlertStationPublic]) -> dict[str, int]:
    """The progress bars' counts, from the rows themselves: a station that received the
    alert keeps counting as received after a cancel or a failure (its state moves on, its
    received time stays), and only a station that played it to the end counts as such."""
    rows = list(stations)
    return {
        "reached": sum(1 for s in rows if reached(s)),
        "played": sum(1 for s in rows if str(s.state) == "finished"),
    }


@router.get("/alerts/{alert_pk}", response_class=HTMLResponse)
def alert_page(
    request: Request, alert_pk: int, session: SessionDep, actor: PageActorDep
) -> HTMLResponse:
    detail = api.visible_detail(session, actor, alert_pk)
    record = session.get(AlertRecord, alert_pk)
    assert record is not None
    scope = api._scope_of(session, record)
    stations = {
        s.id: s
        for s in session.exec(
            select(Station).where(col(Station.id).in_([r.station_id for r in detail.stations]))
        )
    }
    is_open = str(detail.state) in OPEN_STATES
    values: dict[str, Any] = {
        "actor": actor,
        "alert": detail,
        "total": len(detail.stations),
        **delivery_counts(detail.stations),
        "has_alert": reached,
        "link": {sid: fleet_state(s) for sid, s in stations.items()},
        "FLEET_LABELS": FLEET_LABELS,
        "is_open": is_open,
        "can_cancel": is_open and bool(scope <= visible_areas(actor, Action.ALERT_CANCEL, session)),
        "can_confirm": str(detail.state) == "awaiting_confirmation"
        and detail.created_by != actor.name
        and bool(scope <= visible_areas(actor, Action.ALERT_CONFIRM, session)),
        "ALERT_STATE_NAMES": ALERT_STATE_NAMES,
        "SEVERITY_NAMES": SEVERITY_NAMES,
        "DELIVERY_NAMES": DELIVERY_NAMES,
        "DELIVERY_NAMES_T": {k: gettext(v) for k, v in DELIVERY_NAMES.items()},
        "ALERT_STATES_T": {k: gettext(v) for k, v in ALERT_STATE_NAMES.items()},
        "REASONS_T": {k: gettext(v) for k, v in STATION_REASONS.items()},
    }
    return render(request, "alert.html", values)


def _act(
    alert_pk: int, session: Session, context: Any, actor: Actor, action: str
) -> RedirectResponse:
    try:
        if action == "cancel":
            api.cancel_alert(alert_pk, session, context, actor)
        else:
            api.confirm_alert(alert_pk, session, context, actor)
    except HTTPException as exc:
        session.rollback()
        if exc.status_code in (status.HTTP_403_FORBIDDEN, status.HTTP_404_NOT_FOUND):
            raise
        return RedirectResponse(f"/alerts/{alert_pk}", status.HTTP_303_SEE_OTHER)
    said = "alert_cancelled" if action == "cancel" else "alert_confirmed"
    return done(f"/alerts/{alert_pk}", said)


@router.post("/alerts/{alert_pk}/cancel")
def cancel(
    alert_pk: int, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> RedirectResponse:
    return _act(alert_pk, session, context, actor, "cancel")


@router.post("/alerts/{alert_pk}/confirm")
def confirm(
    alert_pk: int, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> RedirectResponse:
    return _act(alert_pk, session, context, actor, "confirm")
