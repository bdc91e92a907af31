"""The password policy (pure CPU work: zxcvbn and its common-password list)."""

from __future__ import annotations

import pytest

from session_ledger.api.users.errors import (
    PasswordTooLongError,
    PasswordTooShortError,
    PasswordTooWeakError,
)
from session_ledger.api.users.passwords import PasswordPolicy
from session_ledger.ledger.config import PasswordSettings

POLICY = PasswordPolicy(PasswordSettings())


@pytest.mark.parametrize(
    "password",
    ["password", "Password1", "        ", "12345678", "qwertyuiop", "iloveyou", "letmein123"],
)
def test_common_and_trivial_passwords_are_too_weak(password: str) -> None:
    with pytest.raises(PasswordTooWeakError) as caught:
        POLICY.check(password, email="ada@example.com", name="Ada")
    assert caught.value.code == "PASSWORD_TOO_WEAK"
    assert len(caught.value.message) > 20  # says why, and what to do


def test_the_message_helps() -> None:
    with pytest.raises(PasswordTooWeakError) as caught:
        POLICY.check("password")
    assert "common" in caught.value.message
    with pytest.raises(PasswordTooWeakError) as weak:
        POLICY.check("zzzzyyyy")
    assert "too easy to guess" in weak.value.message


@pytest.mark.parametrize(
    ("password", "email", "name"),
    [
        ("ada.lovelace@example.com", "Ada.Lovelace@example.com", ""),
        ("ada.lovelace", "ada.lovelace@example.com", ""),
        ("Augusta Ada King", "ada@example.com", "augusta ada king"),
    ],
)
def test_the_accounts_own_email_or_name_is_refused(password: str, email: str, name: str) -> None:
    with pytest.raises(PasswordTooWeakError, match="email address or your name"):
        POLICY.check(password, email=email, name=name)


def test_lengths_are_settings() -> None:
    with pytest.raises(PasswordTooShortError, match="at least 8"):
        POLICY.check("Xq7#pL2")
    with pytest.raises(PasswordTooLongError, match="at most 128"):
        POLICY.check("Xq7#pL2v" * 17)
    loose = PasswordPolicy(PasswordSettings(min_length=4, max_length=200, min_score=0))
    loose.check("Xq7#")
    loose.check("Xq7#pL2v" * 17)  # past zxcvbn's own 72-character limit: scored on a prefix


@pytest.mark.parametrize(
    "password", ["correct horse battery", "Tr0ub4dor&3-kept", "glacier 7 marmalade"]
)
def test_strong_passwords_pass(password: str) -> None:
    POLICY.check(password, email="ada@example.com", name="Ada")


def test_the_score_threshold_is_a_setting() -> None:
    weakish = "monkey42x"
    strict = PasswordPolicy(PasswordSettings(min_score=4))
    with pytest.raises(PasswordTooWeakError, match="needs very strong"):
        strict.check(weakish)
    PasswordPolicy(PasswordSettings(min_score=0)).check(weakish)
