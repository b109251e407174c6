"""Write a live session's Opus packets into an Ogg Opus file (RFC 7845) as they arrive.

The packets are kept exactly as spoken (no re-encode while live); at the end the file
goes through the ordinary upload pipeline and becomes an audio asset. One packet per
Ogg page keeps the writer trivial; the pipeline re-encodes anyway.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

PRE_SKIP = 312


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


class OggOpusWriter:
    def __init__(self, path: Path, serial: int = 0x4C495645) -> None:
        self.path = path
        self._file: BinaryIO = path.open("wb")
        self._serial = serial
        self._page = 0
        self.granule = 0
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, PRE_SKIP, 48_000, 0, 0)
        self._write_page(head, 0, 0x02)
        vendor = b"loaxa live"
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        self._write_page(tags, 0, 0)

    def add(self, packet: bytes, samples: int) -> None:
        self.granule += samples
        self._write_page(packet, self.granule + PRE_SKIP, 0)

    def close(self) -> None:
        if self._file.closed:
            return
        self._write_page(b"", self.granule + PRE_SKIP, 0x04)  # end of stream
        self._file.close()

    def _write_page(self, packet: bytes, granule: int, flags: int) -> None:
        lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, flags, granule, self._serial, self._page, 0, len(lacing)
        )
        page = header + bytes(lacing) + packet
        crc = ogg_crc(page)
        page = page[:22] + struct.pack("<I", crc) + page[26:]
        self._file.write(page)
        self._page += 1
