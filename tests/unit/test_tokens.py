"""Tokens, hashing and BetterAuth-compatible cookie signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import quote

import pytest

from session_ledger.ledger.domain.errors import ConfigError
from session_ledger.ledger.domain.tokens import (
    Signer,
    b64url_decode,
    b64url_encode,
    hash_token,
    is_well_formed,
    new_token,
    tokens_equal,
)

SECRET = "a-test-secret-that-is-at-least-32-characters"
OLD_SECRET = "an-older-secret-that-is-at-least-32-characters"


# ------------------------------------------------------------------ tokens


def test_new_token_is_256_bits_of_url_safe_base64() -> None:
    token = new_token()
    assert len(token) == 43
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_new_tokens_do_not_repeat() -> None:
    assert len({new_token() for _ in range(1000)}) == 1000


def test_hash_token_is_sha256_hex() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(new_token()))


def test_hash_token_accepts_non_ascii() -> None:
    assert hash_token("é") == hashlib.sha256("é".encode()).hexdigest()


def test_tokens_equal() -> None:
    assert tokens_equal("abc", "abc")
    assert not tokens_equal("abc", "abd")
    assert not tokens_equal("abc", "abcd")
    # hmac.compare_digest alone raises TypeError on non-ASCII str.
    assert not tokens_equal("é", "e")
    assert tokens_equal("é", "é")


@pytest.mark.parametrize("token", [new_token(), "a", "A-_z09", "x" * 512])
def test_well_formed_tokens(token: str) -> None:
    assert is_well_formed(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x" * 513,
        "x" * 5000,
        "tökén",
        "abc def",
        "abc.def",
        "abc+def/",
        "abc=",
        "abc\x00",
        "١٢٣",  # Unicode digits are not [0-9]
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert not is_well_formed(token)


# ----------------------------------------------------------------- signing


def _reference_signature(secret: str, token: str) -> str:
    digest = hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_sign_matches_an_independently_computed_vector() -> None:
    token = "k8Sx2VfQ0n4o1cYx3HkZcWq9Pp7rT5uB"
    expected = token + "." + _reference_signature(SECRET, token)
    assert Signer([SECRET]).sign(token) == expected


def test_sign_uses_betterauth_format() -> None:
    token = new_token()
    value = Signer([SECRET]).sign(token)
    head, _, signature = value.rpartition(".")
    assert head == token
    assert len(signature) == 44
    assert signature.endswith("=")
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", signature)
    assert len(base64.b64decode(signature, validate=True)) == 32


def test_sign_unsign_roundtrip() -> None:
    signer = Signer([SECRET])
    token = new_token()
    assert signer.unsign(signer.sign(token)) == token


def test_unsign_url_decodes() -> None:
    signer = Signer([SECRET])
    # Find a token whose signature has '+' or '/' so URL-encoding matters.
    token = next(t for t in (new_token() for _ in range(100)) if "%" in quote(signer.sign(t), ""))
    encoded = quote(signer.sign(token), safe="")
    assert encoded != signer.sign(token)
    assert signer.unsign(encoded) == token


def test_unsign_splits_at_the_last_dot() -> None:
    signer = Signer([SECRET])
    assert signer.unsign(signer.sign("a.b.c")) == "a.b.c"


def test_secret_rotation() -> None:
    token = new_token()
    old_value = Signer([OLD_SECRET]).sign(token)
    rotated = Signer([SECRET, OLD_SECRET])
    assert rotated.unsign(old_value) == token
    # New values are signed with the newest secret.
    assert rotated.sign(token) == Signer([SECRET]).sign(token)
    # Once the old secret is dropped, its signatures stop working.
    assert Signer([SECRET]).unsign(old_value) is None


def test_tampering_is_detected() -> None:
    signer = Signer([SECRET])
    token = new_token()
    value = signer.sign(token)
    _, _, signature = value.rpartition(".")
    other = new_token()
    assert signer.unsign(f"{other}.{signature}") is None
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert signer.unsign(f"{token}.{flipped}") is None
    assert Signer(["another-secret-that-is-at-least-32-chars"]).unsign(value) is None


def test_unsign_rejects_non_canonical_signature_text() -> None:
    signer = Signer([SECRET])
    token = "t"
    signature = _reference_signature(SECRET, token)
    # The last base64 char before '=' carries 2 unused bits; changing them
    # keeps the decoded bytes but is not the signature we issued.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(signature[42])
    variant = signature[:42] + alphabet[index ^ 1] + "="
    assert base64.b64decode(variant) == base64.b64decode(signature)
    assert signer.unsign(f"{token}.{variant}") is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "no-dot-at-all",
        "token.",
        "." + "A" * 43 + "=",  # empty token
        "token." + "A" * 44,  # 44 chars without '='
        "token." + "A" * 43,  # too short
        "token." + "A" * 45 + "=",  # too long
        "token." + "!" * 43 + "=",  # not base64
        "token." + "é" * 43 + "=",
        "tökén." + "A" * 43 + "=",
        "token.%ZZ" + "A" * 41 + "=",
        "token.%C3%A9" + "A" * 42 + "=",  # URL-decodes to non-ASCII
        "x" * 5000,
        "x" * 5000 + "." + "A" * 43 + "=",
        "\x00." + "A" * 43 + "=",
    ],
)
def test_unsign_garbage_is_none(value: str) -> None:
    assert Signer([SECRET]).unsign(value) is None


def test_unsign_rejects_huge_values_even_if_validly_signed() -> None:
    signer = Signer([SECRET])
    assert signer.unsign(signer.sign("x" * 5000)) is None


@pytest.mark.parametrize("secrets", [[], "a-single-string-is-not-a-list", [""], ["ok", ""]])
def test_signer_needs_non_empty_secrets(secrets: list[str]) -> None:
    with pytest.raises(ConfigError):
        Signer(secrets)


def test_signer_repr_hides_secrets() -> None:
    assert SECRET not in repr(Signer([SECRET]))


# ------------------------------------------------------------ generic MAC


def test_mac_is_hmac_sha256_with_the_newest_secret() -> None:
    data = b'{"session":{}}'
    expected = hmac.new(SECRET.encode(), data, hashlib.sha256).digest()
    assert Signer([SECRET, OLD_SECRET]).mac(data) == expected


def test_verify_mac_accepts_any_listed_secret() -> None:
    data = b"payload"
    old_mac = Signer([OLD_SECRET]).mac(data)
    assert Signer([SECRET, OLD_SECRET]).verify_mac(data, old_mac)
    assert not Signer([SECRET]).verify_mac(data, old_mac)
    assert not Signer([SECRET]).verify_mac(b"payloaD", Signer([SECRET]).mac(data))
    assert not Signer([SECRET]).verify_mac(data, b"")


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe", b"hello world", bytes(range(256))])
def test_b64url_roundtrip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert re.fullmatch(r"[A-Za-z0-9_-]*", text)
    assert b64url_decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "a",  # impossible length
        "aGVsbG8=",  # padding
        "aGVs+G8",  # standard alphabet
        "aGVs/G8",
        "aGV sbG8",
        "aGVsbG9",  # non-canonical trailing bits ("aGVsbG8" is canonical)
        "héllo",
        "!!!!",
    ],
)
def test_b64url_decode_garbage_is_none(text: str) -> None:
    assert b64url_decode(text) is None


def test_a_remembered_value_never_vouches_for_a_tampered_one() -> None:
    """unsign remembers verified values; a changed byte must still fail."""
    signer = Signer(["k" * 32])
    token = new_token()
    value = signer.sign(token)
    assert signer.unsign(value) == token
    assert signer.unsign(value) == token  # from memory
    tampered = value[:-2] + ("A=" if value[-2] != "A" else "B=")
    assert signer.unsign(tampered) is None
    other = new_token()
    assert signer.unsign(f"{other}.{value.rsplit('.', 1)[1]}") is None
    assert Signer(["z" * 32]).unsign(value) is None
