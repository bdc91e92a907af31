"""The append path hashes from pre-serialised JSON; it must produce exactly
the hash of the reference definition (what verification recomputes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from session_ledger.ledger.chain import (
    GENESIS,
    canonical_json,
    event_hash,
    event_hash_from_json,
    timestamp,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
texts = st.text(min_size=1, max_size=20)


@given(
    prev=st.sampled_from([GENESIS, "ab" * 32]),
    stream_id=texts,
    version=st.integers(min_value=1, max_value=2**31 - 1),
    event_type=texts,
    schema_version=st.integers(min_value=1, max_value=9),
    data=payloads,
    meta=payloads,
    user_id=st.none() | texts,
    micros=st.integers(min_value=0, max_value=10**15),
)
def test_hash_from_json_equals_the_reference_hash(
    prev: str,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    data: dict[str, Any],
    meta: dict[str, Any],
    user_id: str | None,
    micros: int,
) -> None:
    recorded_at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    expected = event_hash(
        prev,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema_version,
        data=data,
        meta=meta,
        user_id=user_id,
        recorded_at=recorded_at,
    )
    fast = event_hash_from_json(
        prev,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema_version,
        data_json=canonical_json(data),
        meta_json=canonical_json(meta),
        user_id=user_id,
        recorded_at=timestamp(recorded_at),
    )
    assert fast == expected
