"""Playing time of a delivered audio file, read from its container.

The player trusts the file, not the plan: a plan's ``duration_ms`` is what the server
believed when it encoded, the file is what will actually come out of the speaker.
Reading the Ogg pages in pure Python keeps this dependency-free and fast (it seeks
from page header to page header and never decodes audio).
"""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path
from typing import BinaryIO

_OGG_MAGIC = b"OggS"
_OPUS_HEAD = b"OpusHead"
# capture(4) version(1) type(1) granule(8) serial(4) seq(4) crc(4) segments(1)
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
_OPUS_RATE_PER_MS = 48  # Opus granule positions always count 48 kHz samples
_NO_PACKET_ENDS = -1  # granule of a page on which no packet completes

AudioSource = str | os.PathLike[str] | bytes


def ogg_opus_duration_ms(source: AudioSource) -> int:
    """Duration of an Ogg Opus file or buffer: last granule minus pre-skip, in ms.

    Raises ``ValueError`` if the data is not a well-formed Ogg Opus stream.
    """
    with _open(source) as stream:
        return _walk_opus(stream)


def audio_duration_ms(source: AudioSource) -> int:
    """Duration of an Ogg Opus or WAV file, chosen by its magic bytes."""
    with _open(source) as stream:
        magic = stream.read(12)
        stream.seek(0)
        if magic.startswith(_OGG_MAGIC):
            return _walk_opus(stream)
        if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
            return _wav_duration_ms(stream)
    raise ValueError(f"unsupported audio container (magic {magic[:4]!r}); expected Ogg or WAV")


def _open(source: AudioSource) -> BinaryIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return Path(source).open("rb")


def _walk_opus(stream: BinaryIO) -> int:
    pre_skip: int | None = None
    opus_serial: int | None = None
    last_granule: int | None = None
    total = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    offset = 0
    while True:
        header = stream.read(_PAGE_HEADER.size)
        if not header:
            break
        if len(header) < _PAGE_HEADER.size:
            raise ValueError(f"truncated Ogg page header at byte {offset}")
        magic, _version, _type, granule, serial, _seq, _crc, n_segments = _PAGE_HEADER.unpack(
            header
        )
        if magic != _OGG_MAGIC:
            raise ValueError(f"not an Ogg stream: no page at byte {offset}")
        lacing = stream.read(n_segments)
        if len(lacing) < n_segments:
            raise ValueError(f"truncated Ogg segment table at byte {offset}")
        body_len = sum(lacing)
        if opus_serial is None:
            # The first page of the stream carries the identification header whole.
            head = stream.read(body_len)
            if len(head) < 19 or not head.startswith(_OPUS_HEAD):
                raise ValueError("Ogg stream is not Opus (no OpusHead)")
            opus_serial = serial
            pre_skip = struct.unpack_from("<H", head, 10)[0]
        else:
            stream.seek(body_len, io.SEEK_CUR)
            if serial == opus_serial and granule != _NO_PACKET_ENDS:
                last_granule = granule
        offset += _PAGE_HEADER.size + n_segments + body_len
        if offset > total:
            raise ValueError(f"truncated Ogg page body before byte {offset}")
    if opus_serial is None or pre_skip is None:
        raise ValueError("empty Ogg stream")
    if last_granule is None:
        raise ValueError("Ogg Opus stream has no audio pages")
    return max(0, last_granule - pre_skip) // _OPUS_RATE_PER_MS


def _wav_duration_ms(stream: BinaryIO) -> int:
    try:
        with wave.open(stream, "rb") as wav:
            return wav.getnframes() * 1000 // wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"malformed WAV: {exc}") from exc
