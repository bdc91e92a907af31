"""session.additional_fields: declared names, JSON types, defaults, input."""

from __future__ import annotations

import pytest

from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.errors import ConfigError
from session_ledger.ledger.domain.policy import AdditionalField


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("string", ["", "x"], [1, True, [], {}]),
        ("number", [0, 1.5, -3], ["1", True, [1]]),
        ("boolean", [True, False], [0, "true"]),
        ("array", [[], [1, "a"]], [{}, "[]"]),
        ("object", [{}, {"a": 1}], [[], "{}"]),
    ],
)
def test_values_must_have_the_declared_json_type(
    kind: str, good: list[object], bad: list[object]
) -> None:
    spec = AdditionalField(type=kind)
    assert spec.accepts(None)  # null unsets
    assert all(spec.accepts(v) for v in good)
    assert not any(spec.accepts(v) for v in bad)


def test_declared_from_the_environment_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SESSION_LEDGER_SESSION__ADDITIONAL_FIELDS",
        '{"theme": {"type": "string", "default": "light"},'
        ' "tier": {"type": "string", "input": false}}',
    )
    policy = load_settings().session
    assert policy.field_defaults == {"theme": "light"}
    assert policy.additional_fields["tier"].input is False


@pytest.mark.parametrize(
    "fields",
    [
        {"userId": {"type": "string"}},  # a reserved key of the session object
        {"theme": {"type": "string", "default": 3}},  # default of the wrong type
        {"theme": {"type": "color"}},
    ],
)
def test_bad_declarations_stop_with_one_line(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(session={"additional_fields": fields})
    assert "additional_fields" in caught.value.message
    assert "\n" not in caught.value.message
