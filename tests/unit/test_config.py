"""Settings from the environment and TOML: every list setting takes a JSON
array, a comma-separated list or a single value; anything that cannot load
is one ConfigError naming the setting (no traceback of pydantic's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr

from session_ledger.ledger.config import RateLimitRule, Settings, load_settings
from session_ledger.ledger.domain.errors import ConfigError

SECRET = "s" * 16 + "0123456789abcdef"
OTHER = "o" * 16 + "fedcba9876543210"


def _list_settings(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, item type) of every list setting, sections included."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) is list:
            yield prefix + name, get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _list_settings(annotation, f"{prefix}{name}.")


LIST_SETTINGS = sorted(_list_settings(Settings))


def _env_name(setting: str) -> str:
    return "SESSION_LEDGER_" + setting.replace(".", "__").upper()


def _value(settings: Settings, setting: str) -> list[str]:
    value: Any = settings
    for part in setting.split("."):
        value = getattr(value, part)
    return [_text(v) for v in value]


def _text(item: Any) -> str:
    if isinstance(item, SecretStr):
        return item.get_secret_value()
    if isinstance(item, RateLimitRule):
        return f"{item.max}/{item.window}"
    return str(item)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SESSION_LEDGER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./session-ledger.toml of the developer's


def _samples(item: Any) -> tuple[str, str]:
    """Two valid items of a list setting of ``item``s."""
    if item is SecretStr:
        return SECRET, OTHER
    if item is RateLimitRule:
        return "5/60", "10/900"
    return "http://a.example:3000", "http://b.example"


def test_there_are_list_settings_to_check() -> None:
    assert {"secrets", "trusted_origins", "trusted_proxies", "rate_limit.account_failures"} <= {
        n for n, _ in LIST_SETTINGS
    }


@pytest.mark.parametrize(("setting", "item"), LIST_SETTINGS, ids=[n for n, _ in LIST_SETTINGS])
@pytest.mark.parametrize("form", ["single", "commas", "json"])
def test_every_list_setting_reads_a_single_value_commas_or_json(
    monkeypatch: pytest.MonkeyPatch, setting: str, item: Any, form: str
) -> None:
    one, two = _samples(item)
    if item is str and setting == "trusted_proxies":
        one, two = "10.0.0.0/8", "192.0.2.1"
    text = {"single": one, "commas": f" {one}, {two} ", "json": f'["{one}", "{two}"]'}[form]
    monkeypatch.setenv(_env_name(setting), text)
    expected = [one] if form == "single" else [one, two]
    assert _value(load_settings(), setting) == expected


def test_a_broken_json_list_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SESSION_LEDGER_TRUSTED_ORIGINS", '["http://a.example"')
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message.startswith("invalid setting trusted_origins: ")
    assert "\n" not in raised.value.message


def test_a_bad_item_is_one_line_and_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_LEDGER_SECRETS", f"{SECRET},tooshort-secret-value")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message.startswith(
        "invalid setting secrets: each secret must be at least 32 characters"
    )
    assert "tooshort" not in raised.value.message


def test_rules_as_json_objects_and_a_bad_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "SESSION_LEDGER_RATE_LIMIT__ACCOUNT_FAILURES"
    monkeypatch.setenv(name, '[{"window": 60, "max": 5}, "10/900"]')
    assert _value(load_settings(), "rate_limit.account_failures") == ["5/60", "10/900"]
    monkeypatch.setenv(name, "5/60,ten/900")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message.startswith("invalid setting rate_limit.account_failures.1: ")
    assert "'ten/900' is not MAX/WINDOW" in raised.value.message


def test_a_section_that_is_not_json_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_LEDGER_SESSION", "{expires_in: 5}")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message.startswith("invalid setting session: SESSION_LEDGER_SESSION")


def test_toml_syntax_error_and_missing_file_are_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('base_url = "http://x\n')
    monkeypatch.setenv("SESSION_LEDGER_CONFIG_FILE", str(bad))
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message.startswith(f"config file {bad}: invalid TOML: ")
    assert "\n" not in raised.value.message

    monkeypatch.setenv("SESSION_LEDGER_CONFIG_FILE", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match=r"nowhere\.toml does not exist"):
        load_settings()


def test_toml_lists_and_unknown_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('trusted_origins = ["http://a.example"]\n[session]\nexpires_in = 60\n')
    monkeypatch.setenv("SESSION_LEDGER_CONFIG_FILE", str(good))
    settings = load_settings()
    assert (settings.trusted_origins, settings.session.expires_in) == (["http://a.example"], 60)

    good.write_text("[session]\nexpires_inn = 60\n")
    with pytest.raises(ConfigError, match=r"^invalid setting session\.expires_inn: "):
        load_settings()
