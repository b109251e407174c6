"""Password hashing (argon2id) and the rules for a new password."""

from __future__ import annotations

import time

import pytest

from server.auth.passwords import (
    PasswordPolicyError,
    burn_verify,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_argon2id_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("Mật khẩu dài lắm 2025")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "Mật khẩu dài lắm 2025")
    assert not verify_password(stored, "mật khẩu dài lắm 2025")
    assert not verify_password("not-a-hash", "anything")
    assert hash_password("same-password-x") != hash_password("same-password-x")  # salted
    assert not needs_rehash(stored)


def test_weaker_hashes_are_flagged_for_rehash() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("a-long-password")
    assert verify_password(weak, "a-long-password")
    assert needs_rehash(weak)


@pytest.mark.parametrize(
    ("password", "needle"),
    [
        ("short", "at least 10"),
        ("lan.nguyen", "not be the username"),
        ("LAN.NGUYEN", "not be the username"),
        ("1234567890", "too easy"),
        ("aaaaaaaaaaaa", "too easy"),
        ("x" * 300, "at most 256"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password: str, needle: str) -> None:
    with pytest.raises(PasswordPolicyError, match=needle):
        check_password_policy(password, "lan.nguyen")


def test_a_good_passphrase_passes() -> None:
    check_password_policy("cụm loa thôn Nà Rị", "lan.nguyen")


def test_unknown_users_cost_about_as_much_as_real_ones() -> None:
    """No timing shortcut tells a guesser which usernames exist."""
    stored = hash_password("the-real-password")
    burn_verify("warm-up-password")  # the dummy hash is made once

    def elapsed(action: object) -> float:
        start = time.perf_counter()
        for _ in range(3):
            action()  # type: ignore[operator]
        return time.perf_counter() - start

    real = elapsed(lambda: verify_password(stored, "a-wrong-password"))
    dummy = elapsed(lambda: burn_verify("a-wrong-password"))
    assert dummy > real / 3
