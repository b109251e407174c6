"""Files the product reads at run time and ships in its wheel.

The repository keeps them at its top level (``audio/``, ``schedules/``), where people look
for them; the symlinks here make the same files package data, so ``pip install loaxa``
without ``-e`` carries the canned alert library and the schedule examples.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
CANNED_AUDIO_DIR = ASSETS_DIR / "audio"
SCHEDULES_DIR = ASSETS_DIR / "schedules"
