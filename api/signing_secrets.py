"""Where the HMAC secrets that sign cookies come from: the one place that
decides what happens when none are configured.

* Configured ``secrets`` (``SESSION_LEDGER_SECRETS``): used as they are
  (the settings refuse weak ones).
* None configured, ``environment`` development, a server bound to a loopback
  address and an SQLite file database: a random secret generated once and
  kept beside the database file (``<database>.secret``, mode 0600), so that
  sessions survive a restart and every process serving that database signs
  alike. It is published atomically (written to a private temporary file,
  then hard-linked into place, which fails if another process won the race),
  so concurrent starts never read a half-written secret.
* Anything else refuses to start with one line naming the setting. No secret
  ever comes from the source: a constant there could be read by anyone and
  used to forge cookies.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from session_ledger.ledger.config import MISSING_SECRETS, Settings, weak_secret
from session_ledger.ledger.domain.errors import ConfigError

SUFFIX = ".secret"


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    values: list[str]
    #: Set when the secret is the generated development one (say so at start).
    development_file: Path | None = None


def signing_secrets(settings: Settings, *, bind_host: str | None = None) -> SigningSecrets:
    """The secrets to sign with, newest first; ConfigError when there are none.

    ``bind_host`` is the address a server listens on (``serve`` knows it);
    None when unknown (an application built around the router), which never
    qualifies for the generated development secret."""
    configured = settings.secret_values
    if configured:
        return SigningSecrets(configured)
    path = _development_secret_or_refuse(settings, bind_host)
    return SigningSecrets([read_or_create(path)], development_file=path)


def check_signing_secrets(settings: Settings, *, bind_host: str | None = None) -> None:
    """Refuse now (ConfigError) where ``signing_secrets`` would; writes nothing
    (``serve`` says so before it touches the port or the database)."""
    if not settings.secret_values:
        _development_secret_or_refuse(settings, bind_host)


def _development_secret_or_refuse(settings: Settings, bind_host: str | None) -> Path:
    path = development_secret_path(settings, bind_host)
    if path is None:
        raise ConfigError(MISSING_SECRETS)
    return path


def development_secret_path(settings: Settings, bind_host: str | None) -> Path | None:
    """Where the generated secret lives, or None when one may not be used."""
    if settings.environment != "development" or bind_host is None or not is_loopback(bind_host):
        return None
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:") or url.query:
        return None
    database = Path(url.database).resolve()
    return database.with_name(database.name + SUFFIX)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_or_create(path: Path) -> str:
    """The secret in ``path``; a new random one, published atomically, if absent."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".session-ledger-secret-")
    try:
        with os.fdopen(fd, "w") as file:  # mkstemp: mode 0600
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        # Fails when another process published its secret first: use that one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> str:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file; remove it or set SESSION_LEDGER_SECRETS")
    if info.st_mode & 0o077:
        raise ConfigError(f"{path} is readable by other users: chmod 600 {path}")
    value = path.read_text(encoding="utf-8").strip()
    if weak_secret(value):
        raise ConfigError(f"{path} holds no usable secret; remove it or set SESSION_LEDGER_SECRETS")
    return value
