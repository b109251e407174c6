"""What can go wrong between typed text and stored speech.

One subclass per cause, so the API can answer "fix your text" (422) apart from
"the server's voice is not installed" (503) without parsing messages.
"""

from __future__ import annotations

from loaxa_protocol.errors import LoaxaError


class TtsError(LoaxaError):
    """Text could not be turned into delivery audio; the message says why.

    ``code`` and ``params`` (optional) let the web pages say it in the reader's language.
    """

    def __init__(self, message: str, code: str = "", params: dict[str, object] | None = None):
        super().__init__(message)
        self.code = code
        self.params = params or {}


class TtsTextError(TtsError):
    """The text itself is unusable: empty, nothing speakable, or too long."""


class TtsVoiceError(TtsError):
    """The requested voice is not a valid name for the configured engine."""


class TtsEngineMissing(TtsError):
    """The configured engine (binary, Python package or voice model) is not installed."""


class TtsSynthesisError(TtsError):
    """The engine ran but produced no usable audio."""
