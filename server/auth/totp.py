"""Time-based one-time codes (RFC 6238) for accounts that can broadcast or alert.

A code is accepted one step either side of now (phones drift) and only once: the
accepted step is stored, so a code read over someone's shoulder cannot be replayed.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

import pyotp

ISSUER = "Loaxa"
STEP_S = 30
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=username, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to, if it is valid now and newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=STEP_S)
    for offset in range(-DRIFT_STEPS, DRIFT_STEPS + 1):
        moment = now + timedelta(seconds=offset * STEP_S)
        step = totp.timecode(moment)
        if hmac.compare_digest(totp.at(moment), code) and (last_step is None or step > last_step):
            return step
    return None
