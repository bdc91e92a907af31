"""No secret from the source: configured secrets, or (loopback development
server on an SQLite file only) one generated beside the database; else one
line naming the setting. Weak secrets are refused."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import session_ledger.ledger.config
from session_ledger.api.signing_secrets import read_or_create, signing_secrets
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.errors import ConfigError

GOOD = "Jq3v9Lx0pT7wRk2mZs8Ne4Hb6Yc1Ud5F"


def sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"


def test_no_secret_lives_in_the_source() -> None:
    assert not hasattr(session_ledger.ledger.config, "DEVELOPMENT_SECRET")
    assert load_settings(environment="development").secret_values == []


def test_configured_secrets_are_used_as_they_are(tmp_path: Path) -> None:
    settings = load_settings(database_url=sqlite(tmp_path), secrets=[GOOD])
    resolved = signing_secrets(settings, bind_host="127.0.0.1")
    assert resolved.values == [GOOD]
    assert resolved.development_file is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_development_generates_a_private_secret_once(tmp_path: Path, host: str) -> None:
    settings = load_settings(database_url=sqlite(tmp_path))
    first = signing_secrets(settings, bind_host=host)
    assert first.development_file == tmp_path / "ledger.db.secret"
    assert stat.S_IMODE(first.development_file.stat().st_mode) == 0o600
    assert len(first.values[0]) >= 60
    assert signing_secrets(settings, bind_host=host).values == first.values
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.db.secret"]  # no temporary left


def test_concurrent_starts_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.secret"
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: read_or_create(path), range(32)))
    assert len(values) == 1


@pytest.mark.parametrize(
    ("overrides", "host"),
    [
        ({}, "0.0.0.0"),  # noqa: S104  (every interface)
        ({}, "192.0.2.10"),
        ({}, None),  # an app whose bind address is unknown
        ({"environment": "test"}, "127.0.0.1"),
        ({"database_url": "postgresql+asyncpg://u@127.0.0.1/db"}, "127.0.0.1"),
        ({"database_url": "sqlite+aiosqlite:///:memory:"}, "127.0.0.1"),
    ],
)
def test_anything_else_refuses_with_one_line_naming_the_setting(
    tmp_path: Path, overrides: dict[str, str], host: str | None
) -> None:
    settings = load_settings(**{"database_url": sqlite(tmp_path), **overrides})
    with pytest.raises(ConfigError) as caught:
        signing_secrets(settings, bind_host=host)
    assert "SESSION_LEDGER_SECRETS" in caught.value.message
    assert "\n" not in caught.value.message
    assert not (tmp_path / "ledger.db.secret").exists()


def test_production_without_secrets_refuses_at_load() -> None:
    with pytest.raises(ConfigError, match="SESSION_LEDGER_SECRETS"):
        load_settings(environment="production")


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.secret"
    read_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_or_create(path)


@pytest.mark.parametrize(
    "secret",
    [
        "short-secret",
        "a" * 64,  # one repeated character
        "ab" * 32,  # a short pattern
        "0123456780123456780123456789",  # under 32 characters
    ],
)
def test_weak_secrets_are_refused_with_one_line(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(secrets=[GOOD, secret])
    assert caught.value.message.startswith("invalid setting secrets")
    assert "\n" not in caught.value.message
