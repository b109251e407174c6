"""Hand the start-up's freed memory back to the system once the agent is up.

Importing and validating (pydantic builds every message schema, the config is parsed,
the stored plan verified) allocates and frees a few MiB on the C heap; glibc keeps the
freed pages mapped, so they count in the station's RSS for as long as it runs.
``malloc_trim(0)`` returns them (0.3 MiB with compiled ``.pyc``, 1.3 MiB when every
module was compiled at start; ``loaxa bench node``). Not glibc (musl has no
``malloc_trim``): nothing to do.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def trim_heap() -> None:
    """Let glibc release its free heap pages.

    No ``gc.collect()`` first: in a process that also runs a server and many agents (the
    tests, ``loaxa stack``) a full collection would hold the GIL for a long moment; the
    ctypes call itself releases it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
