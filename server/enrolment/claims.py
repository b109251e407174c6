"""The verdict on a claim code: pure rules, no database, no clock of its own.

A code is single-use: the first ask binds it to the asking station's public key. The
same station asking again with the same key (its first answer was lost on a bad link)
is the same request, not a replay; any other key presenting a bound code is a replay,
and a code past its expiry that was never used is expired. Once bound, the claim's
expiry no longer matters: the station used it in time and now waits for a technician.

| claim                      | same key           | other key |
|----------------------------|--------------------|-----------|
| unknown                    | UNKNOWN            | UNKNOWN   |
| free, not expired          | ok (binds)         | ok        |
| free, expired              | EXPIRED            | EXPIRED   |
| bound, request rejected    | REJECTED           | REPLAYED  |
| bound                      | ok (same request)  | REPLAYED  |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Refusal(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    REJECTED = "rejected"


REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.MALFORMED: 422,
    Refusal.UNKNOWN: 403,
    Refusal.EXPIRED: 410,
    Refusal.REPLAYED: 409,
    Refusal.REJECTED: 403,
}
"""The HTTP status a station (or an attacker) receives for each refusal."""

REFUSAL_TEXT: dict[Refusal, str] = {
    Refusal.MALFORMED: "this is not a claim code (16 letters and digits, e.g. K7QM-3XHD-9PWA-TC4N)",
    Refusal.UNKNOWN: "this claim code is not known to the province server",
    Refusal.EXPIRED: "this claim code has expired; ask the province for a new one",
    Refusal.REPLAYED: "this claim code has already been used by another station",
    Refusal.REJECTED: "a technician refused this station's request to join",
}


@dataclass(frozen=True)
class ClaimFacts:
    """What the rules may know about a presented code."""

    expires_at: datetime
    bound_key: str | None
    """The public key of the station that used it; None while unused."""
    rejected: bool = False


def judge(claim: ClaimFacts | None, public_key: str, now: datetime) -> Refusal | None:
    """None when the station holding ``public_key`` may go on with this claim."""
    if claim is None:
        return Refusal.UNKNOWN
    if claim.bound_key is None:
        return Refusal.EXPIRED if now >= claim.expires_at else None
    if claim.bound_key != public_key:
        return Refusal.REPLAYED
    return Refusal.REJECTED if claim.rejected else None
