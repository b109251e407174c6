"""Audio: upload (decode, normalise, encode, store by sha256) and signed, resumable download."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loaxa_protocol.errors import AudioError
from server.api.deps import ContextDep, DbId, SessionDep
from server.api.limits import too_large_detail
from server.audio.assets import asset_for
from server.audio.gate import MediaBusy
from server.audio.pipeline import process_audio
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action
from server.context import ServerContext
from server.models import AudioAsset, AudioPublic, AudioUploaded

log = logging.getLogger(__name__)

router = APIRouter(prefix="/audio", tags=["audio"])

READ_CHUNK_BYTES = 1024 * 1024
LAST_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z: beyond it no date exists to compare with

SignedExp = Annotated[
    int | None,
    Query(ge=0, le=LAST_EXP, description="expiry of the signed URL, Unix seconds (UTC)"),
]
SignedSig = Annotated[
    str | None,
    Query(
        pattern="^[0-9a-f]{64}$",
        description="HMAC-SHA256 of the URL, 64 lowercase hex digits",
    ),
]


def read_audio_or_404(session: Session, audio_id: int) -> AudioAsset:
    asset = session.get(AudioAsset, audio_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audio {audio_id} does not exist")
    return asset


@asynccontextmanager
async def spooled_upload(
    file: UploadFile, limit_bytes: int, directory: Path
) -> AsyncIterator[Path | None]:
    """The upload copied into a file of its own in 1 MiB chunks, or None when it is
    larger than ``limit_bytes``; the file is removed when the block ends.

    The bytes never sit in memory whole: ``limit_bytes`` per waiting upload would
    otherwise add up while uploads queue for a conversion slot.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix="upload-") as spool:
        size = 0
        while chunk := await file.read(READ_CHUNK_BYTES):
            size += len(chunk)
            if size > limit_bytes:
                break
            spool.write(chunk)
        spool.flush()
        yield None if size > limit_bytes else Path(spool.name)


def scratch_dir(context: ServerContext) -> Path:
    """Where uploads and decoded PCM wait on disk (not /tmp, which may be RAM)."""
    return context.settings.data_dir / "scratch"


def busy_response_headers(exc: MediaBusy) -> dict[str, str]:
    return {"retry-after": str(exc.retry_after_s)}


def _sha256_of(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as source:
        while chunk := source.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _find(session: Session, condition: ColumnElement[bool]) -> AudioAsset | None:
    return session.exec(select(AudioAsset).where(condition)).first()


def ingest_upload(
    context: ServerContext, data: bytes | Path, filename: str, actor: Actor
) -> tuple[AudioAsset, bool]:
    """Process and store an upload (its bytes or a file holding them); returns the
    asset and whether it is new.

    Runs in a worker thread (decoding takes real CPU), inside one of the server's
    conversion slots: ``MediaBusy`` (an ``AudioError``) when none is free in time. The
    same upload twice is answered from the database without decoding again (and
    without a slot); processing failures raise ``AudioError`` before anything is
    written, and a failed insert removes the file it had just added, so a failed
    upload leaves nothing behind. A new asset is audited in its own transaction; a
    repeat changes nothing and is not.
    """
    source_sha256 = _sha256_of(data)
    with Session(context.engine) as session:
        existing = _find(session, col(AudioAsset.source_sha256) == source_sha256)
        if existing is not None:
            return existing, False

    scratch = scratch_dir(context)
    scratch.mkdir(parents=True, exist_ok=True)
    with context.media.slot():
        processed = process_audio(data, filename, scratch_dir=scratch)
    with Session(context.engine) as session:
        existing = _find(session, col(AudioAsset.sha256) == processed.sha256)
        if existing is not None:
            return existing, False
        was_stored = context.store.exists(processed.sha256)
        context.store.put(processed.encoded)
        asset = asset_for(processed, source_sha256, filename)
        session.add(asset)
        try:
            session.flush()
            record_audit(
                session,
                actor,
                "audio.upload",
                "audio",
                str(asset.id),
                after={
                    "filename": asset.original_filename,
                    "sha256": asset.sha256,
                    "duration_ms": asset.duration_ms,
                },
            )
            session.commit()
        except IntegrityError:
            # A concurrent upload of the same audio won; its file is the one stored.
            session.rollback()
            existing = _find(session, col(AudioAsset.sha256) == processed.sha256)
            if existing is None:
                raise
            return existing, False
        except Exception:
            session.rollback()
            if not was_stored:
                context.store.delete(processed.sha256)
            raise
        session.refresh(asset)
        return asset, True


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AudioUploaded,
    responses={
        200: {"description": "identical audio was already stored"},
        503: {"description": "every conversion slot is busy; retry after Retry-After seconds"},
    },
)
async def create_audio(
    file: UploadFile,
    response: Response,
    context: ContextDep,
    session: SessionDep,
    actor: ActorDep,
) -> AudioUploaded:
    """Upload any common audio format; it is loudness-normalised and encoded for delivery."""
    filename = file.filename or "upload"
    await run_in_threadpool(
        authorize,
        actor,
        Action.AUDIO_UPLOAD,
        None,
        session,
        object_type="audio",
        object_id=filename,
    )
    limit = context.settings.max_upload_bytes
    async with spooled_upload(file, limit, scratch_dir(context)) as upload:
        if upload is None:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large_detail(limit))
        if upload.stat().st_size == 0:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"file: {filename!r} is empty (0 bytes)"
            )
        try:
            asset, created = await run_in_threadpool(
                ingest_upload, context, upload, filename, actor
            )
        except MediaBusy as exc:
            log.warning("upload %r refused: %s", filename, exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"file: {exc}", busy_response_headers(exc)
            ) from exc
        except AudioError as exc:
            log.info("rejected upload %r: %s", filename, exc)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"file: {exc}") from exc
    if not created:
        response.status_code = status.HTTP_200_OK
    return AudioUploaded.model_validate({**asset.model_dump(), "created": created})


@router.get("/{audio_id}", response_model=AudioPublic)
def read_audio(audio_id: DbId, session: SessionDep, actor: ActorDep) -> AudioAsset:
    """Audio has no area: any role that may read audio somewhere may read its metadata."""
    authorize(actor, Action.AUDIO_READ, None, session)
    return read_audio_or_404(session, audio_id)


@router.head("/{audio_id}/content", response_class=FileResponse, operation_id="head_audio_content")
@router.get("/{audio_id}/content", response_class=FileResponse, operation_id="read_audio_content")
def read_audio_content(
    audio_id: DbId,
    session: SessionDep,
    context: ContextDep,
    exp: SignedExp = None,
    sig: SignedSig = None,
) -> FileResponse:
    """The encoded file, for stations. Needs the URL's signature; supports HTTP Range.

    The only API route without a user: stations have no account, and the signature
    (bound to this audio id, expiring) is the credential. Malformed parameters (an
    ``exp`` outside 0..9999-12-31, a ``sig`` that is not 64 hex digits) are refused
    with 422 before any date arithmetic or comparison can fail on them.
    """
    if exp is None or sig is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "audio downloads need a signed URL (exp and sig)"
        )
    now = context.clock()
    if exp <= now.timestamp():
        expired = datetime.fromtimestamp(exp, UTC).isoformat()
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this audio URL expired at {expired}")
    if not context.keys.urls.check_url(audio_id, exp, sig, now):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"bad signature for audio {audio_id} (sig={sig[:16]!r})"
        )
    asset = read_audio_or_404(session, audio_id)
    path = context.store.path(asset.sha256)
    if not path.is_file():
        log.error("audio %s (%s) is missing from the store", audio_id, asset.sha256)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audio {audio_id} file is missing")
    return FileResponse(
        path,
        media_type=asset.mime_type,
        # Content-addressed: the sha256 *is* the entity tag, and the bytes never change.
        headers={"etag": f'"{asset.sha256}"', "cache-control": "private, max-age=86400"},
    )
