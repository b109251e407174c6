"""Station broker passwords, hashed in Mosquitto's own ``$7$`` format.

Mosquitto's password file stores PBKDF2-HMAC-SHA512 as
``$7$<iterations>$<base64 salt>$<base64 hash>``. Storing exactly that lets the server
write a password file (or feed a dynamic-security plugin) from the database without
ever holding the plain passwords. Argon2 is planned for the server's own users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Station passwords are random 192-bit tokens, not words a person chose: a dictionary
# attack on them is hopeless at any iteration count, while every connect costs the
# (single-threaded) broker one PBKDF2 run. So few iterations, as mosquitto_passwd uses.
ITERATIONS = 1_000
SALT_BYTES = 12  # what mosquitto_passwd uses


def new_password() -> str:
    """A random password a technician pastes into the node config once."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _empty, scheme, iterations, salt_b64, digest_b64 = stored.split("$")
        if scheme != "7":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def mosquitto_password_line(username: str, stored: str) -> str:
    """One line of a Mosquitto ``password_file``."""
    if ":" in username:
        raise ValueError(f"username {username!r} cannot contain ':'")
    return f"{username}:{stored}"
