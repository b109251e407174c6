"""The accounts subsystem's exceptions, under the project's one exception root."""

from __future__ import annotations

from loaxa_protocol.errors import LoaxaError


class AuthError(LoaxaError):
    """An account, password, token or grant request cannot be carried out."""


class AccountExists(AuthError):
    """The username is taken."""


class LoginFailed(AuthError):
    """A sign-in was refused; the message is safe to show (it never says which part)."""

    def __init__(self, message: str, *, reason: str, counts: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        """for the audit log: unknown_user, bad_password, inactive, totp_missing, totp_wrong"""
        self.counts = counts
        """whether it counts towards the rate limit (a missing second factor does not)"""
