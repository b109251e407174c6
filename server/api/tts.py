"""Text-to-speech: typed Vietnamese text becomes a stored audio asset, for preview and use.

The rendered asset is an ordinary audio asset (same pipeline, same store), so its id
can go into a broadcast or a programme like any upload. The answer also carries the
normalised text, so the operator sees "ba mươi triệu năm trăm nghìn đồng" where they
typed "30.500.000 đ" and can rephrase before the whole commune hears it, and a short-lived
signed URL the web page can play.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from sqlmodel import Session, SQLModel

from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action
from server.context import ServerContext
from server.models import AudioPublic
from server.tts.errors import (
    TtsEngineMissing,
    TtsError,
    TtsSynthesisError,
    TtsTextError,
    TtsVoiceError,
)
from server.tts.service import TtsRendering

log = logging.getLogger(__name__)

router = APIRouter(prefix="/audio", tags=["audio"])

PREVIEW_URL_TTL = timedelta(hours=1)


class TtsRequest(SQLModel):
    text: str = Field(
        min_length=1,
        max_length=100_000,
        description="Vietnamese text to read aloud; numbers, dates, money and official "
        "abbreviations are expanded to words first",
    )
    voice: str | None = Field(
        default=None,
        max_length=100,
        description="engine voice, e.g. 'vi' or 'vi-vn-x-south' (espeak-ng); default from settings",
    )


class TtsRendered(AudioPublic):
    created: bool = Field(description="False when this text and voice were already rendered")
    normalised_text: str = Field(description="exactly what the engine was asked to say")
    engine: str = Field(description="'espeak-ng' or 'piper'")
    voice: str
    content_url: str = Field(description="signed URL of the audio, valid for one hour")


def http_error_for(exc: TtsError) -> HTTPException:
    """422 for what the operator can fix, 503 for a voice the server lacks, 500 otherwise."""
    if isinstance(exc, TtsTextError | TtsVoiceError):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    if isinstance(exc, TtsEngineMissing):
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"text-to-speech: {exc}")
    assert isinstance(exc, TtsSynthesisError | TtsError)
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"text-to-speech: {exc}")


def _render(context: ServerContext, body: TtsRequest, actor: Actor) -> TtsRendering:
    with Session(context.engine) as session:
        return context.tts.render_detailed(session, body.text, body.voice, actor=actor)


@router.post(
    "/tts",
    status_code=status.HTTP_201_CREATED,
    response_model=TtsRendered,
    responses={200: {"description": "this text and voice were already rendered"}},
)
async def create_tts(
    body: TtsRequest,
    response: Response,
    context: ContextDep,
    session: SessionDep,
    actor: ActorDep,
) -> TtsRendered:
    """Read ``text`` aloud in Vietnamese and store the result as an audio asset."""
    await run_in_threadpool(
        authorize, actor, Action.AUDIO_UPLOAD, None, session, object_type="audio", object_id="tts"
    )
    try:
        rendering = await run_in_threadpool(_render, context, body, actor)
    except TtsError as exc:
        log.info("text-to-speech refused: %s", exc)
        raise http_error_for(exc) from exc
    asset = rendering.asset
    assert asset.id is not None
    if not rendering.created:
        response.status_code = status.HTTP_200_OK
    return TtsRendered.model_validate(
        {
            **asset.model_dump(),
            "created": rendering.created,
            "normalised_text": rendering.normalised_text,
            "engine": rendering.engine,
            "voice": rendering.voice,
            "content_url": context.keys.urls.sign_url(asset.id, PREVIEW_URL_TTL, context.clock()),
        }
    )
