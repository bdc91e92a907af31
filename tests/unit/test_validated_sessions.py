"""The bounded set of (session, token) pairs the store vouched for."""

from __future__ import annotations

from session_ledger.api.validated_sessions import ValidatedSessions


def test_only_the_exact_pair_is_vouched_for() -> None:
    pairs = ValidatedSessions()
    pairs.add("s1", "token-1")
    assert pairs.vouches("s1", "token-1")
    assert not pairs.vouches("s2", "token-1")  # same token, another session id
    assert not pairs.vouches("s1", "token-2")  # same session, another token


def test_least_recently_used_pairs_are_forgotten_first() -> None:
    pairs = ValidatedSessions(max_pairs=2)
    pairs.add("s1", "t1")
    pairs.add("s2", "t2")
    assert pairs.vouches("s1", "t1")  # s1 is now the most recently used
    pairs.add("s3", "t3")
    assert len(pairs) == 2
    assert pairs.vouches("s1", "t1")
    assert not pairs.vouches("s2", "t2")
    assert pairs.vouches("s3", "t3")


def test_a_rotated_token_replaces_nothing_but_its_own_pair() -> None:
    pairs = ValidatedSessions()
    pairs.add("s1", "old")
    pairs.add("s1", "new")
    assert pairs.vouches("s1", "new")
    assert pairs.vouches("s1", "old")  # the revocation feed and expiry still apply
