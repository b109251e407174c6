"""Public pages: residents hear their commune's bulletins again, without signing in.

``/nghe`` lists the communes, ``/nghe/<code>`` a commune's bulletins of the last week
with a player each, ``/nghe/<code>/rss.xml`` the same as a podcast, and
``/nghe/<code>/audio/<sha256>.<ext>`` serves exactly the audio those pages list (any
other hash is 404). Everything is cacheable and needs no script: a 3G phone gets a
few kilobytes of HTML and fetches audio only when the resident presses play.

An operator hides a programme from these pages with ``POST /programmes/public/<id>``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from server.api.deps import ContextDep, SessionDep
from server.audit.log import record_audit
from server.auth.deps import authorize
from server.auth.permissions import Action
from server.i18n import current_language, gettext
from server.listen.feed import Channel, podcast_rss
from server.listen.replay import DAYS, Aired, aired_bulletins, communes
from server.models import Area, AreaLevel
from server.programmes.models import Programme
from server.web.common import PageActorDep, PageRoute, local_time, templates

router = APIRouter(route_class=PageRoute)

PAGE_MAX_AGE_S = 300  # a new bulletin shows within five minutes
AUDIO_MAX_AGE_S = 7 * 24 * 3600  # content-addressed: the bytes behind a hash never change
EXTENSIONS = {"audio/ogg": "ogg", "audio/mpeg": "mp3"}


def cached(request: Request, body: bytes, media_type: str) -> Response:
    """The body with a strong ETag; ``304 Not Modified`` when the client holds it already."""
    tag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "etag": tag,
        "cache-control": f"public, max-age={PAGE_MAX_AGE_S}",
        "vary": "Cookie",  # the language cookie picks the words
    }
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _commune_or_404(session: Session, code: str) -> Area:
    area = session.get(Area, code)
    if area is None or area.level != AreaLevel.COMMUNE:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no commune {code!r}")
    return area


def _audio_path(code: str, entry: Aired) -> str:
    return f"/nghe/{code}/audio/{entry.sha256}.{EXTENSIONS.get(entry.mime_type, 'bin')}"


def _entry_title(entry: Aired) -> str:
    return f"{entry.title} — {local_time(entry.aired_at)[:16]}"


def _html(request: Request, name: str, values: dict[str, object]) -> Response:
    body = templates.get_template(name).render({"request": request, **values})
    return cached(request, body.encode(), "text/html; charset=utf-8")


@router.get("/nghe", response_class=HTMLResponse)
def listen_index(request: Request, session: SessionDep) -> Response:
    """Every commune with a station: where a resident picks theirs."""
    return _html(request, "listen_index.html", {"communes": communes(session)})


@router.get("/nghe/{code}", response_class=HTMLResponse)
def listen_page(request: Request, code: str, session: SessionDep, context: ContextDep) -> Response:
    """The commune's bulletins of the last week, newest first, each with a player."""
    area = _commune_or_404(session, code)
    entries = aired_bulletins(session, code, context.clock())
    values = {
        "area": area,
        "days": DAYS,
        "entries": [(e, _entry_title(e), _audio_path(code, e)) for e in entries],
        "feed": f"/nghe/{code}/rss.xml",
    }
    return _html(request, "listen.html", values)


@router.get("/nghe/{code}/rss.xml")
def listen_feed(request: Request, code: str, session: SessionDep, context: ContextDep) -> Response:
    """The same bulletins as a podcast (RSS 2.0 with enclosures)."""
    area = _commune_or_404(session, code)
    entries = aired_bulletins(session, code, context.clock())
    base = context.settings.public_url.rstrip("/")
    channel = Channel(
        title=gettext("Loudspeaker radio of %(commune)s") % {"commune": area.name},
        link=f"{base}/nghe/{code}",
        description=gettext("Bulletins of the last %(days)s days, to hear again.") % {"days": DAYS},
        language=current_language(),
        updated_at=entries[0].aired_at if entries else None,
    )
    body = podcast_rss(
        channel,
        entries,
        audio_url=lambda e: base + _audio_path(code, e),
        entry_title=_entry_title,
    )
    return cached(request, body, "application/rss+xml; charset=utf-8")


@router.get("/nghe/{code}/audio/{name}")
def listen_audio(
    request: Request, code: str, name: str, session: SessionDep, context: ContextDep
) -> Response:
    """One listed bulletin's delivered audio; 404 for anything the page does not list."""
    _commune_or_404(session, code)
    sha256, _, ext = name.partition(".")
    listed = {e.sha256: e for e in aired_bulletins(session, code, context.clock())}
    entry = listed.get(sha256)
    if entry is None or ext != EXTENSIONS.get(entry.mime_type, "bin"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bulletin here")
    headers = {"etag": f'"{sha256}"', "cache-control": f"public, max-age={AUDIO_MAX_AGE_S}"}
    if request.headers.get("if-none-match") == headers["etag"]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    path = context.store.path(sha256)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bulletin here")
    return FileResponse(path, media_type=entry.mime_type, headers=headers)


@router.post("/programmes/public/{programme_id}")
def set_public(
    programme_id: int,
    session: SessionDep,
    actor: PageActorDep,
    public: Annotated[bool, Form()],
) -> RedirectResponse:
    """Show or hide a programme on its commune's public page (who may edit it decides)."""
    programme = session.get(Programme, programme_id)
    if programme is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no programme {programme_id}")
    authorize(actor, Action.PROGRAMME_EDIT, [programme.area_code], session)
    if programme.public != public:
        record_audit(
            session, actor, "programme.public", "programme", str(programme_id),
            before={"public": programme.public}, after={"public": public},
        )  # fmt: skip
        programme.public = public
        session.add(programme)
        session.commit()
    return RedirectResponse(f"/programmes/p/{programme_id}", status.HTTP_303_SEE_OTHER)
