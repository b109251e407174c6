"""Text alerts read aloud: typed Vietnamese becomes an asset an alert carries inline.

Goes through the server's TTS service (``server.tts``: text normalised to what a reader
says, cached by engine/voice/text, the upload pipeline's loudness and codec), so a
repeated warning is synthesised once and sounds like every other spoken bulletin.
"""

from __future__ import annotations

from sqlmodel import Session

from server.alerts.service import AlertError
from server.auth.actor import Actor
from server.context import ServerContext
from server.models import AudioAsset
from server.tts.errors import TtsError, TtsTextError


def speak(context: ServerContext, text: str, actor: Actor, where: str = "text") -> AudioAsset:
    """The stored asset for ``text``; AlertError naming ``where`` when it cannot be spoken.

    Unusable text is the sender's to fix (422); a missing voice is the server's (503).
    """
    try:
        with Session(context.engine) as session:
            return context.tts.render(session, text, actor=actor)
    except TtsTextError as exc:
        raise AlertError(f"{where}: {str(exc).removeprefix('text: ')}") from exc
    except TtsError as exc:
        raise AlertError(f"{where}: text-to-speech is not available: {exc}", 503) from exc
