"""The audio library: upload with progress, text-to-speech with preview, recording from
the microphone, and an in-page player for every file.

Uploads and text-to-speech go through page routes (not the JSON API) so that a refusal
comes back as ``{"errors": {field: message}}`` in the reader's language, ready to be
shown next to the field. Both run the same pipeline as the API: a failed upload is
refused before anything is stored (see ``server.api.audio.ingest_upload``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlmodel import Session, col, select

from loaxa_protocol.errors import AudioError
from server.api.audio import (
    busy_response_headers,
    ingest_upload,
    read_audio_or_404,
    scratch_dir,
    spooled_upload,
)
from server.api.deps import ContextDep, SessionDep
from server.audio.gate import MediaBusy
from server.audio.pipeline import AudioTargets
from server.auth.actor import Actor
from server.auth.deps import authorize
from server.auth.permissions import Action
from server.context import ServerContext
from server.i18n import gettext
from server.models import AudioAsset
from server.tts.errors import TtsEngineMissing, TtsError, TtsTextError, TtsVoiceError
from server.web.common import PageActorDep, PageRoute, decimal, may_somewhere, render, seconds
from server.web.refusals import explain

log = logging.getLogger(__name__)

router = APIRouter(route_class=PageRoute)

LIBRARY_SHOWN = 200
LISTEN_URL_TTL = timedelta(minutes=30)
TTS_MAX_CHARS = 5000


def _refused(
    errors: dict[str, str], code: int = status.HTTP_422_UNPROCESSABLE_CONTENT
) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=code)


def asset_json(asset: AudioAsset) -> dict[str, Any]:
    """What the page shows of one file, already formatted for the reader."""
    return {
        "id": asset.id,
        "filename": asset.original_filename,
        "duration": seconds(asset.duration_ms),
        "loudness": loudness_text(asset),
        "listen_url": f"/audio/{asset.id}/listen",
        "schedule_url": f"/programmes/new?audio_id={asset.id}",
    }


TARGETS = AudioTargets()
TOLERANCE_LU = 1.0
"""docs/audio.md: the target is met within ±1 LU unless the peak limiter's budget ran out."""


def loudness_text(asset: AudioAsset) -> str:
    """The loudness as measured and as stored, e.g. ``-23,4 → -16,0 LUFS``; a file left
    quieter than the target's tolerance says why (its peaks were limited as far as allowed)."""
    before = "—" if asset.lufs_before is None else decimal(asset.lufs_before)
    text = f"{before} → {decimal(asset.lufs_after)} LUFS"
    if asset.lufs_after < TARGETS.integrated_lufs - TOLERANCE_LU:
        text += " (" + gettext("peaks limited") + ")"
    return text


def loudness_note() -> str:
    """What the loudness column means, with the target and its tolerance."""
    return gettext(
        "Every file is brought to %(target)s LUFS (±%(tolerance)s LU), so all bulletins play "
        "equally loud. Speech with sharp peaks can stay up to about 2 LU quieter: the peak "
        "limiter takes at most %(limit)s dB off, so the voice is not distorted on the horns."
    ) % {
        "target": decimal(TARGETS.integrated_lufs, 0),
        "tolerance": decimal(TOLERANCE_LU, 0),
        "limit": decimal(TARGETS.max_limiter_db, 0),
    }


@router.get("/audio", response_class=HTMLResponse)
def audio_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    authorize(actor, Action.AUDIO_READ, None, session)
    assets = session.exec(
        select(AudioAsset).order_by(col(AudioAsset.id).desc()).limit(LIBRARY_SHOWN)
    ).all()
    values = {
        "actor": actor,
        "assets": assets,
        "loudness": loudness_text,
        "loudness_note": loudness_note(),
        "can_upload": may_somewhere(actor, Action.AUDIO_UPLOAD),
        "can_schedule": may_somewhere(actor, Action.BROADCAST_CREATE),
    }
    return render(request, "audio.html", values)


@router.get("/audio/{audio_id}/listen")
def listen(
    audio_id: int, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> RedirectResponse:
    """The in-page player's source: a short-lived signed URL of the stored file."""
    authorize(actor, Action.AUDIO_READ, None, session)
    asset = read_audio_or_404(session, audio_id)
    assert asset.id is not None
    url = context.keys.urls.sign_url(asset.id, LISTEN_URL_TTL, context.clock())
    return RedirectResponse(url, status.HTTP_303_SEE_OTHER)


def _may_upload(session: Session, actor: Actor) -> bool:
    try:
        authorize(actor, Action.AUDIO_UPLOAD, None, session, object_type="audio", object_id="web")
    except HTTPException:
        return False
    return True


@router.post("/audio/upload")
async def upload(
    context: ContextDep,
    session: SessionDep,
    actor: PageActorDep,
    file: UploadFile | None = None,
) -> JSONResponse:
    """One file from the page (a chosen file or a microphone recording)."""
    if not await run_in_threadpool(_may_upload, session, actor):
        return _refused({"file": gettext("Your account may not upload audio.")}, 403)
    if file is None or not file.filename:
        return _refused({"file": gettext("Choose an audio file first.")})
    limit = context.settings.max_upload_bytes
    async with spooled_upload(file, limit, scratch_dir(context)) as upload:
        if upload is None:
            message = gettext("The file is larger than %(mb)s MB.") % {"mb": limit // 1_000_000}
            return _refused({"file": message}, status.HTTP_413_CONTENT_TOO_LARGE)
        if upload.stat().st_size == 0:
            return _refused({"file": gettext("The file is empty.")})
        try:
            asset, created = await run_in_threadpool(
                ingest_upload, context, upload, file.filename, actor
            )
        except MediaBusy as exc:
            log.warning("page upload %r refused: %s", file.filename, exc)
            refusal = _refused({"file": explain(exc).text}, status.HTTP_503_SERVICE_UNAVAILABLE)
            refusal.headers.update(busy_response_headers(exc))
            return refusal
        except AudioError as exc:
            log.info("page upload %r refused: %s", file.filename, exc)
            return _refused({"file": explain(exc).text})
    body = asset_json(asset) | {"created": created}
    return JSONResponse(body, status_code=201 if created else 200)


def _speak(context: ServerContext, text: str, actor: Actor) -> tuple[AudioAsset, str]:
    with Session(context.engine) as session:
        rendering = context.tts.render_detailed(session, text, None, actor=actor)
        return rendering.asset, rendering.normalised_text


@router.post("/audio/tts")
async def text_to_speech(
    context: ContextDep,
    session: SessionDep,
    actor: PageActorDep,
    text: Annotated[str, Form()] = "",
) -> JSONResponse:
    """Read the typed text aloud; answer with the new file and what was actually said."""
    if not await run_in_threadpool(_may_upload, session, actor):
        return _refused({"text": gettext("Your account may not upload audio.")}, 403)
    text = text.strip()
    if not text:
        return _refused({"text": gettext("Type the text to be read aloud.")})
    if len(text) > TTS_MAX_CHARS:
        message = gettext("The text is too long: at most %(n)s characters.") % {"n": TTS_MAX_CHARS}
        return _refused({"text": message})
    try:
        asset, spoken = await run_in_threadpool(_speak, context, text, actor)
    except (TtsTextError, TtsVoiceError) as exc:
        return _refused({"text": explain(exc).text})
    except TtsEngineMissing:
        return _refused({"text": gettext("Text-to-speech is not installed on this server.")}, 503)
    except TtsError as exc:
        log.warning("text-to-speech failed: %s", exc)
        return _refused({"text": explain(exc).text}, 500)
    return JSONResponse(asset_json(asset) | {"spoken": spoken}, status_code=201)
