"""People's passwords: argon2id hashes and the rules a new password must meet.

Station broker passwords are a different thing (``server.passwords``: Mosquitto's own
PBKDF2 format, so a password file can be written from the database).
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.auth.errors import AuthError

MIN_PASSWORD_CHARS = 10
# argon2 costs the same whatever the length, but a megabyte "password" still costs
# parsing and memory on every attempt; nobody types more than this.
MAX_PASSWORD_CHARS = 256
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "0123456789",
        "12345678910",
        "password123",
        "password1234",
        "qwertyuiop",
        "matkhau123",
        "matkhau1234",
        "administrator",
        "changeme123",
    }
)

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (t=3, 64 MiB).
_hasher = PasswordHasher()


class PasswordPolicyError(AuthError):
    """A new password is too weak; the message says why."""


def check_password_policy(password: str, username: str) -> None:
    """Refuse passwords a guesser tries first; raises :class:`PasswordPolicyError`."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordPolicyError(
            f"password must be at least {MIN_PASSWORD_CHARS} characters (got {len(password)})"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_CHARS} characters")
    lowered = password.strip().lower()
    if lowered == username.strip().lower():
        raise PasswordPolicyError("password must not be the username")
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        raise PasswordPolicyError("password is too easy to guess; use a longer phrase")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when the hash used weaker parameters than today's; rehash on next sign-in."""
    return _hasher.check_needs_rehash(stored)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("loaxa-dummy-password-for-timing")


def burn_verify(password: str) -> None:
    """Spend the time a real verification takes, for a username that does not exist.

    Without it an unknown username answers in microseconds and a known one in tens of
    milliseconds, which tells a guesser which usernames are worth attacking.
    """
    verify_password(_dummy_hash(), password[:MAX_PASSWORD_CHARS])
