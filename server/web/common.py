"""What every page shares: the Jinja2 environment with gettext, local time, the signed-in
user (or a redirect to sign in), the request's language, and the words for states.

Times are stored in UTC and shown in Vietnam's time; numbers are written the way the
reader's language writes them (Vietnamese: decimal comma).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, col, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.alerts import canned
from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import bearer_scheme, cookie_scheme, current_actor, visible_areas
from server.auth.permissions import Action, allowed_somewhere
from server.i18n import (
    LANGUAGE_COOKIE,
    LANGUAGES,
    N_,
    current_language,
    gettext,
    ngettext,
    pgettext,
    set_language,
)
from server.local_time import LOCAL_TZ
from server.models import Area

SERVER_DIR = Path(__file__).resolve().parent.parent
REFRESH_S = 3


def local_time(value: datetime | None, with_ms: bool = False) -> str:
    """``dd/mm/yyyy HH:MM:SS`` in Vietnam's time: how both languages' readers here write it."""
    if value is None:
        return "—"
    local = value.astimezone(LOCAL_TZ)
    if with_ms:
        return local.strftime("%d/%m/%Y %H:%M:%S.%f")[:-3]
    return local.strftime("%d/%m/%Y %H:%M:%S")


def local_hm(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(LOCAL_TZ).strftime("%H:%M")


def local_input(value: datetime | None) -> str:
    """The value of an ``<input type="datetime-local">``: local wall time, no offset."""
    return "" if value is None else value.astimezone(LOCAL_TZ).strftime("%Y-%m-%dT%H:%M")


def decimal(value: float | None, digits: int = 1) -> str:
    """A number as the reader writes it: Vietnamese use a decimal comma and a thin
    thousands separator, English a point and a comma."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}"
    if current_language() == "en":
        return text
    return text.replace(",", " ").replace(".", ",")


def seconds(duration_ms: int | None) -> str:
    """A duration as ``m:ss`` (a bulletin is minutes long; nobody reads 183,4 s)."""
    if duration_ms is None:
        return "—"
    total = round(duration_ms / 1000)
    return f"{total // 60}:{total % 60:02d}"


SPEECH_PREFIX = "tts: "


def audio_name(asset: Any) -> str:
    """An audio file as a clerk knows it: a canned alert message by its title in the
    reader's language (``Cảnh báo bão``), never its library key (``alert:typhoon``)."""
    library = getattr(asset, "library", None)
    if not library:
        name = str(asset.original_filename)
        if name.startswith(SPEECH_PREFIX):  # server/tts/service.py names speech so
            return gettext("Speech: %(text)s") % {"text": name.removeprefix(SPEECH_PREFIX)}
        return name
    name = library.removeprefix(canned.PREFIX)
    if name == canned.TONE:
        return gettext("Attention tone (alert library)")
    message = canned.BY_NAME.get(name)
    if message is None:
        return str(library)
    title = message.title_en if current_language() == "en" else message.title_vi
    return gettext("%(title)s (alert library)") % {"title": title}


# ------------------------------------------------------------------ words for states
# msgids in English, marked with N_ so the extractor finds them; templates translate
# them with _() at render time, in the reader's language.

STATE_LABELS = {
    "planned": N_("Scheduled"),
    "delivered": N_("Schedule received"),
    "fetched": N_("Audio downloaded"),
    "playing": N_("Playing"),
    "played": N_("Played"),
    "failed": N_("Failed"),
    "interrupted": N_("Interrupted"),
}
STATUS_LABELS = {
    "online": N_("Online"),
    "degraded": N_("Has a problem"),
    "offline": N_("Disconnected"),
    "stopped": N_("Stopped"),
    "unknown": N_("Unknown"),
}
PRIORITY_LABELS = {
    "emergency": N_("Emergency"),
    "live": N_("Live"),
    "priority": N_("Priority"),
    "normal": N_("Normal"),
    "background": N_("Relay / background"),
}
ROLE_LABELS = {
    "province_admin": N_("Province administrator"),
    "alert_officer": N_("Alert officer"),
    "commune_operator": N_("Commune operator"),
    "approver": N_("Approver"),
    "technician": N_("Technician"),
    "viewer": N_("Viewer"),
}

JS_MESSAGES = {
    "success": N_("succeeded"),
    "failure": N_("failed"),
    "sent_waiting": N_("sent, waiting for the station to answer…"),
    "no_answer": N_("the station has not answered after %(n)s seconds; it may be disconnected."),
    "sending": N_("sending the command to the station…"),
    "send_failed": N_("the command could not be sent (%(why)s)."),
    "volume_range": N_("The volume must be from 0 to 100 %%."),
    "ack_failed": N_("The alarm could not be acknowledged (%(why)s). Try again."),
    "chart_last": N_("Latest value %(value)s at %(time)s on %(day)s"),
    "chart_failed": N_("The chart data could not be loaded."),
    "error": N_("Error"),
    "loading": N_("Loading…"),
    "no_data": N_("No data in this period."),
    "uploading": N_("Uploading…"),
    "processing": N_("Processing on the server (measuring loudness)…"),
    "uploaded": N_("Uploaded"),
    "speech_made": N_("Speech made"),
    "network_error": N_("The network failed; nothing was stored. Please try again."),
    "recording": N_("Recording… press Stop when done"),
    "mic_denied": N_("The browser did not allow the microphone."),
    "mic_unsupported": N_("This browser cannot record audio."),
    "cmd_test_tone": N_("Play a test tone"),
    "cmd_set_amp": N_("Switch the amplifier"),
    "cmd_set_volume": N_("Set the volume"),
    "cmd_restart": N_("Restart"),
    "cmd_fetch_log": N_("Fetch the log"),
    "confirm_cancel_alert": N_("Cancel this alert on every station?"),
    "stream_lost": N_("Live updates interrupted; reconnecting…"),
    "live_unsupported": N_("This browser cannot speak live; use a recent Chrome."),
    "live_refused": N_("The server refused: %(why)s"),
    "live_failed": N_("Live broadcast failed: %(why)s"),
    "live_warming": N_("Chime: the amplifiers warm up for %(n)s s. Speak after it."),
    "live_on_air": N_("ON AIR on %(n)s stations. Press Stop when done."),
    "live_stopped": N_("Off air."),
}
"""Words the scripts show, translated into the page as JSON (scripts hold no text)."""


def _translate(message: str) -> str:
    return gettext(message)


def _js_messages() -> dict[str, str]:
    return {key: gettext(text) for key, text in JS_MESSAGES.items()}


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SERVER_DIR / "templates"),
        autoescape=jinja2.select_autoescape(("html", "xml")),
        extensions=["jinja2.ext.i18n"],
    )
    # Newstyle: {% trans %} and _() autoescape and take %(name)s keyword arguments.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext, ngettext, newstyle=True, pgettext=pgettext
    )
    env.filters.update(local=local_time, hm=local_hm, local_input=local_input)
    env.filters.update(decimal=decimal, seconds=seconds, audio_name=audio_name)
    env.globals.update(
        STATE_LABELS=STATE_LABELS,
        STATUS_LABELS=STATUS_LABELS,
        PRIORITY_LABELS=PRIORITY_LABELS,
        ROLE_LABELS=ROLE_LABELS,
        REFRESH_S=REFRESH_S,
        LANGUAGES=LANGUAGES,
        lang=current_language,
        js_messages=_js_messages,
    )
    return Jinja2Templates(env=env)


templates = make_templates()
STATIC_FILES = StaticFiles(directory=SERVER_DIR / "static")
"""The pages' CSS and scripts, served by this server: no CDN, works on an offline network."""


async def use_request_language(request: Request) -> None:
    """Router dependency: translate this request into the reader's chosen language.

    Async on purpose: it runs in the request's own context, which the (threaded) sync
    handlers then copy, so their gettext calls see the language set here.
    """
    set_language(request.cookies.get(LANGUAGE_COOKIE) or "")


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def area_names(session: Session, codes: set[str]) -> dict[str, str]:
    rows = session.exec(select(Area).where(col(Area.code).in_(codes))).all()
    return {area.code: area.name for area in rows}


def safe_next(target: str | None) -> str:
    """Only a path on this server: ``//evil.example`` or a full URL would be an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def page_actor(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Actor:
    """The signed-in user, or a redirect to the sign-in page (also for an ended session)."""
    try:
        actor = current_actor(request, session, context, bearer, cookie)
    except HTTPException as exc:
        if exc.status_code != status.HTTP_401_UNAUTHORIZED:
            raise
        actor = None
    if actor is None:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise HTTPException(
            status.HTTP_303_SEE_OTHER,
            "sign in first",
            headers={"Location": f"/login?next={target}"},
        )
    return actor


PageActorDep = Annotated[Actor, Depends(page_actor)]


def may(actor: Actor, action: Action, area_code: str, session: Session) -> bool:
    """Whether ``actor`` may do ``action`` here: for showing a control, never for enforcing it."""
    return area_code in visible_areas(actor, action, session)


def may_somewhere(actor: Actor, action: Action) -> bool:
    return allowed_somewhere(actor.grants, action)


def menu(actor: Actor) -> list[tuple[str, str]]:
    """The navigation for this user: only the places their roles open (href, msgid)."""
    items = [("/", N_("Overview")), ("/fleet", N_("Stations"))]
    if may_somewhere(actor, Action.STATION_REGISTER):
        items.append(("/enrolment", N_("Waiting stations")))
    if may_somewhere(actor, Action.STATION_UPDATE):
        items.append(("/updates", N_("Updates")))
    if may_somewhere(actor, Action.AUDIO_READ):
        items.append(("/audio", N_("Audio")))
    if may_somewhere(actor, Action.BROADCAST_READ):
        items.append(("/programmes", N_("Programme")))
        items.append(("/reports", N_("Reports")))
    if may_somewhere(actor, Action.LIVE_BROADCAST):
        items.append(("/live", N_("Speak live")))
    if may_somewhere(actor, Action.ALERT_SEND):
        items.append(("/alerts", N_("Alerts")))
    items.append(("/alarms", N_("Alarms")))
    if may_somewhere(actor, Action.USER_MANAGE):
        items.append(("/users", N_("Users")))
    if may_somewhere(actor, Action.AUDIT_READ):
        items.append(("/audit", N_("Audit log")))
    return items


templates.env.globals["menu"] = menu


FLASH = {
    "user_added": N_("The user was added."),
    "role_given": N_("The role was given."),
    "role_taken": N_("The role was taken away."),
    "station_approved": N_("The station was approved; it joins when it next asks."),
    "station_rejected": N_("The station's request was refused."),
    "alert_cancelled": N_("The alert was cancelled; the stations are being told."),
    "alert_confirmed": N_("The alert was confirmed and is being sent."),
}
"""What a form did, said on the page it leads to (``?done=user_added``): a person sees
their change took. Only these fixed sentences: the address carries a code, never words."""


def flash_message(request: Request) -> str:
    code = request.query_params.get("done", "")
    return gettext(FLASH[code]) if code in FLASH else ""


def done(path: str, code: str) -> RedirectResponse:
    """The redirect after a form that worked, with its confirmation."""
    assert code in FLASH
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}done={code}", status.HTTP_303_SEE_OTHER)


templates.env.globals["flash_message"] = flash_message


ERROR_WORDS = {
    403: N_("Your account may not open this page."),
    404: N_("This page does not exist, or it is not in your area."),
}


class PageRoute(APIRoute):
    """A page answers a person, not a program: a refusal becomes a page in their language
    (with the same status code), and "sign in first" a plain redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                location = (exc.headers or {}).get("Location")
                if 300 <= exc.status_code < 400 and location:
                    return RedirectResponse(location, exc.status_code)
                if exc.status_code not in ERROR_WORDS:
                    raise
                set_language(request.cookies.get(LANGUAGE_COOKIE) or "")
                values = {"message": gettext(ERROR_WORDS[exc.status_code]), "actor": None}
                return render(request, "error.html", values, status_code=exc.status_code)

        return page_handler


MACHINE_PREFIXES = ("/api/", "/static/", "/docs", "/redoc", "/openapi.json")
"""Addresses programs ask for: their refusals stay JSON (FastAPI's own answer)."""


async def unknown_address(request: Request, exc: Exception) -> Response:
    """An address no route answers (or a method it does not take): a person gets the
    error page in their language with the same status, a program FastAPI's JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith(MACHINE_PREFIXES) or exc.status_code not in (404, 405):
        return await http_exception_handler(request, exc)
    set_language(request.cookies.get(LANGUAGE_COOKIE) or "")
    words = ERROR_WORDS[404] if exc.status_code == 404 else N_("This page cannot do that.")
    values = {"message": gettext(words), "actor": None}
    return render(request, "error.html", values, status_code=exc.status_code)
