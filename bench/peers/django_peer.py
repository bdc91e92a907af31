"""Django's sessions (``django.contrib.sessions``, 5.2 LTS): the ``db``,
``cached_db`` and ``cache`` engines, the cache being Django's own Redis
backend (``django.core.cache.backends.redis.RedisCache``, redis-py).

Used as a view would: ``SessionStore()`` filled with the payload and saved
(a new key: ``exists`` + INSERT for ``db``), and ``SessionStore(key).load()``.
On SQLite Django gets the pragmas our store runs with (WAL, synchronous
NORMAL) through ``init_command``. Django's connection stays open for the
whole run (no ``request_finished`` closes it, as ``CONN_MAX_AGE = None``
would keep it in a deployment): the fastest way Django can run this.
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.peers.harness import Contender
from bench.peers.workload import Backends, redis_url, session_data

SECRET_KEY = "bench-django-secret-" + "0123456789abcdef" * 3


def configure(backends: Backends, backend: str, engine: str) -> None:
    """Django's settings for one run (once per process: they are global)."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    if backend == "postgres":
        url = backends.pg
        database: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.database,
            "HOST": url.host,
            "PORT": url.port or 5432,
            "USER": url.username,
            "PASSWORD": url.password or "",
        }
    else:
        database = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": backends.sqlite_path,
            # The pragmas session-ledger's SQLite store runs with (Django's
            # default is a rollback journal, synchronous on every commit).
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    settings.configure(
        SECRET_KEY=SECRET_KEY,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.sessions"],
        DATABASES={"default": database},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url(),
                "KEY_PREFIX": backends.redis_prefix.rstrip(":"),
            }
        },
        SESSION_ENGINE=f"django.contrib.sessions.backends.{engine}",
    )
    django.setup()
    if engine != "cache":
        call_command("migrate", "sessions", verbosity=0)


class DjangoSessions:
    def __init__(self, engine: str) -> None:
        module = importlib.import_module(f"django.contrib.sessions.backends.{engine}")
        self.store_class: Any = module.SessionStore
        self.engine = engine
        self.keys: list[str] = []

    def create(self, i: int) -> None:
        session = self.store_class()
        session.update(session_data(i))
        session.save()
        self.keys.append(session.session_key)

    def load(self, i: int) -> None:
        data = self.store_class(session_key=self.keys[i % len(self.keys)]).load()
        assert data["_auth_user_id"], "session not found"

    def contender(self) -> Contender:
        return Contender(
            f"Django {self.engine}",
            {"SessionStore.save (new)": self.create, "SessionStore.load": self.load},
            is_async=False,
        )


def start(backends: Backends, backend: str, engine: str) -> DjangoSessions:
    configure(backends, backend, engine)
    return DjangoSessions(engine)


def version() -> str:
    import django

    return f"Django {django.get_version()}"
