"""Typed text becomes a stored, normalised, encoded audio asset — once.

Theory of operation
-------------------
1. The text is checked (not empty, not longer than ``max_chars``) and normalised to
   the words a reader would say (:mod:`server.tts.normalise`).
2. The cache key is ``sha256(engine identity, voice, normalised text)``; the
   ``SpokenText`` table maps it to the asset (and a new asset also carries it in
   ``AudioAsset.source_sha256``, the column that answers "was this upload seen
   before"). The same notice typed twice, or a daily programme rendered every day,
   is synthesised once.
3. On a miss the engine writes a WAV and the WAV goes through the *upload* pipeline
   (:func:`server.audio.pipeline.process_audio`): the same −16 LUFS / −1 dBTP
   loudness, the same delivery codec, the same content-addressed store. Stations
   cannot tell spoken text from an uploaded recording.
4. The asset row is inserted and the caller's session is committed (as the plan
   publisher does), so a rendering survives whatever the caller does next; a lost
   race with an identical rendering returns the winner's row.

Synthesis and encoding take real CPU (about a second for a short notice): call
``render`` from a worker thread, never from the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loaxa_protocol.errors import AudioError
from server.audio.assets import asset_for
from server.audio.pipeline import AudioTargets, ProcessedAudio, process_audio
from server.audio.store import AudioStore
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.models import AudioAsset
from server.settings import Settings
from server.tts.engines import EspeakEngine, PiperEngine, TtsEngine
from server.tts.errors import TtsError, TtsSynthesisError, TtsTextError
from server.tts.models import SpokenText
from server.tts.normalise import normalise

log = logging.getLogger(__name__)

CHARS_PER_SECOND = 14.0
"""Rough Vietnamese reading speed (normalised text), for messages only."""


@dataclass(frozen=True)
class TtsRendering:
    """One rendered text: the stored asset and what was actually spoken."""

    asset: AudioAsset
    normalised_text: str
    engine: str
    voice: str
    created: bool
    """False when the same text and voice were already rendered (served from the cache)."""


class TtsService:
    """Renders text through one engine into the audio store; safe to call from any thread."""

    def __init__(
        self,
        engine: TtsEngine,
        store: AudioStore,
        *,
        max_chars: int = 5000,
        targets: AudioTargets = AudioTargets(),
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_chars = max_chars
        self.targets = targets
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------ public API

    def render(
        self, session: Session, text: str, voice: str | None = None, *, actor: Actor | None = None
    ) -> AudioAsset:
        """Speak ``text`` (Vietnamese) with ``voice`` (engine default when None).

        Returns the stored asset, from the cache when this exact text was rendered
        before. When it stores a new rendering it commits ``session`` (render before
        making changes of your own in it, or use a session of its own). Raises
        ``TtsTextError`` for unusable text, ``TtsVoiceError``/``TtsEngineMissing`` for a
        voice or engine that is not there, ``TtsSynthesisError`` when the engine or the
        pipeline fails.
        """
        return self.render_detailed(session, text, voice, actor=actor).asset

    def prepare(self, text: str, voice: str | None = None) -> tuple[str, str, str]:
        """Check and normalise without synthesising: (normalised text, voice, cache key)."""
        if not isinstance(text, str) or not text.strip():
            raise TtsTextError("text: nothing to read aloud (the text is empty)", "tts_empty")
        if len(text) > self.max_chars:
            minutes = self.max_chars / CHARS_PER_SECOND / 60
            raise TtsTextError(
                f"text: {len(text)} characters is too long to read aloud in one item; the "
                f"limit is {self.max_chars} (about {minutes:.0f} minutes of speech). Split it "
                "into several items.",
                "tts_too_long",
                {"chars": len(text), "limit": self.max_chars, "minutes": round(minutes)},
            )
        spoken = normalise(text)
        if not any(ch.isalnum() for ch in spoken):
            raise TtsTextError(
                "text: nothing to read aloud (no letters or digits)", "tts_unspeakable"
            )
        chosen = voice if voice is not None else self.engine.default_voice
        self.engine.check_voice(chosen)
        identity = self.engine.identity(chosen)
        key = hashlib.sha256(f"tts\x00{identity}\x00{spoken}".encode()).hexdigest()
        return spoken, chosen, key

    def render_detailed(
        self, session: Session, text: str, voice: str | None = None, *, actor: Actor | None = None
    ) -> TtsRendering:
        """Like :meth:`render`, also saying what was spoken and whether it was cached."""
        spoken, chosen, key = self.prepare(text, voice)
        with self._lock_for(key):
            cached = self._cached(session, key)
            if cached is not None:
                return TtsRendering(cached, spoken, self.engine.name, chosen, created=False)
            processed = self._synthesise(spoken, chosen)
            asset, created = self._store(session, processed, key, spoken, chosen, actor)
        return TtsRendering(asset, spoken, self.engine.name, chosen, created=created)

    # ------------------------------------------------------------- internals

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 1000:  # forget idle locks; a held one is re-created safely
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(key, threading.Lock())

    def _cached(self, session: Session, key: str) -> AudioAsset | None:
        entry = session.get(SpokenText, key)
        if entry is None:
            return None
        asset = session.get(AudioAsset, entry.audio_id)
        if asset is not None and self.store.exists(asset.sha256):
            return asset
        log.warning("tts: cached audio %s lost its file; rendering again", entry.audio_id)
        return None

    def _synthesise(self, spoken: str, voice: str) -> ProcessedAudio:
        what = f"text-to-speech ({self.engine.name} {voice})"
        wav = self.engine.synthesise(spoken, voice)
        try:
            return process_audio(wav, what, self.targets)
        except AudioError as exc:
            raise TtsSynthesisError(str(exc)) from exc

    def _store(
        self,
        session: Session,
        processed: ProcessedAudio,
        key: str,
        spoken: str,
        voice: str,
        actor: Actor | None,
    ) -> tuple[AudioAsset, bool]:
        """Insert the asset (unless identical bytes are stored) and its cache entry; commit."""
        was_stored = self.store.exists(processed.sha256)
        self.store.put(processed.encoded)
        existing = self._by_sha(session, processed.sha256)
        created = existing is None
        asset = existing or asset_for(processed, key, f"tts: {spoken}")
        try:
            session.add(asset)
            session.flush()
            assert asset.id is not None
            entry = session.get(SpokenText, key)
            if entry is None:
                entry = SpokenText(key=key, audio_id=asset.id, engine="", voice=voice, text="")
            entry.audio_id = asset.id
            entry.engine = self.engine.identity(voice)[:200]
            entry.voice = voice
            entry.text = spoken
            session.add(entry)
            if actor is not None and created:
                record_audit(
                    session,
                    actor,
                    "audio.tts",
                    "audio",
                    str(asset.id),
                    after={
                        "engine": self.engine.name,
                        "voice": voice,
                        "sha256": asset.sha256,
                        "duration_ms": asset.duration_ms,
                        "text": spoken,
                    },
                )
            session.commit()
        except IntegrityError:
            session.rollback()  # a concurrent rendering stored the same audio: theirs is ours
            winner = self._by_sha(session, processed.sha256)
            if winner is None:
                raise
            return winner, False
        except Exception:
            session.rollback()
            if not was_stored:
                self.store.delete(processed.sha256)
            raise
        session.refresh(asset)
        if created:
            log.info(
                "tts: rendered %d chars with %s %s -> %s (%d ms)",
                len(spoken), self.engine.name, voice, asset.sha256[:12], asset.duration_ms,
            )  # fmt: skip
        return asset, created

    @staticmethod
    def _by_sha(session: Session, sha256: str) -> AudioAsset | None:
        return session.exec(select(AudioAsset).where(col(AudioAsset.sha256) == sha256)).first()


def engine_from_settings(settings: Settings) -> TtsEngine:
    """The engine ``settings.tts_engine`` names; a missing piece is reported at first use."""
    if settings.tts_engine == "piper":
        engine = PiperEngine(settings.tts_piper_model, executable=settings.tts_piper_executable)
        if settings.tts_voice is not None:
            engine.default_voice = settings.tts_voice
        return engine
    return EspeakEngine(
        default_voice=settings.tts_voice or "vi", words_per_minute=settings.tts_espeak_wpm
    )


def service_from_settings(settings: Settings, store: AudioStore) -> TtsService:
    """The server's TTS service, as ``build_context`` wires it."""
    engine = engine_from_settings(settings)
    try:
        engine.check_voice(engine.default_voice)
    except TtsError as exc:  # the server still runs; rendering says the same thing
        log.error("text-to-speech is not usable: %s", exc)
    return TtsService(engine, store, max_chars=settings.tts_max_chars)
