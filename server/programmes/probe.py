"""Is this stream URL audio? A short HTTP GET at save, so a typo is caught before 05:00.

An unreachable URL is only a warning (the channel may be down right now, or reachable
from the stations but not from the server); a URL that answers with something that is
not audio (an HTML page, a 404) is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

AUDIO_TYPES = ("audio/", "application/ogg", "video/mp2t", "application/x-mpegurl")
"""Content types relayed as audio (HLS playlists included)."""
SNIFF_BYTES = 4096


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    error: str | None = None
    """the URL is reachable and not audio: refuse the programme"""
    warning: str | None = None
    """the URL could not be checked: save, but tell the operator"""


def _looks_like_audio(head: bytes) -> bool:
    return (
        head.startswith((b"ID3", b"OggS", b"fLaC", b"RIFF", b"#EXTM3U", b"\x1aE\xdf\xa3"))
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MPEG / ADTS sync
        or b"ftyp" in head[:12]
    )


def probe_stream(url: str, timeout_s: float) -> ProbeResult:
    """GET the first bytes of ``url`` and judge them by Content-Type, then by magic bytes."""
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", url, headers={"Icy-MetaData": "0"}) as response,
        ):
            if response.status_code >= 500:
                return ProbeResult(
                    False, warning=f"stream {url} answered HTTP {response.status_code} just now"
                )
            if response.status_code >= 400:
                return ProbeResult(
                    False,
                    error=f"stream {url} answered HTTP {response.status_code}: not an audio stream",
                )
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type.startswith(AUDIO_TYPES):
                return ProbeResult(True)
            head = b""
            for chunk in response.iter_bytes():
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
            if _looks_like_audio(head):
                return ProbeResult(True)
            return ProbeResult(
                False,
                error=f"stream {url} is not audio (Content-Type {content_type or 'missing'!r}, "
                "and its first bytes are no known audio format)",
            )
    except httpx.HTTPError as exc:
        return ProbeResult(
            False, warning=f"stream {url} could not be reached from the server ({exc!s:.120})"
        )
