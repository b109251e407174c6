"""Hand the start-up's freed memory back to the system once the agent is up.

Importing and validating (pydantic builds every message schema, the config is parsed,
the stored plan verified) allocates and frees a few MiB on the C heap; glibc keeps the
freed pages mapped, so they count in the station's RSS for as long as it runs.
``malloc_trim(0)`` returns them (about 1.3 MiB, ``loaxa bench node``). Not glibc (musl
has no ``malloc_trim``): nothing to do.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def trim_heap() -> None:
    """Collect garbage, then let glibc release its free heap pages."""
    gc.collect()
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
