"""The upload limit in words, shared by the size gate and the upload route."""

from __future__ import annotations

MULTIPART_SLACK_BYTES = 64 * 1024
"""Multipart boundaries and part headers around the file itself."""


def too_large_detail(limit_bytes: int) -> str:
    return (
        f"upload too large: the limit is {limit_bytes} bytes "
        f"({limit_bytes / 1024 / 1024:.1f} MiB, setting max_upload_bytes)"
    )
