"""What each part of the peers bench needs, and one line for what is missing."""

from __future__ import annotations

import importlib.util
import shutil

from bench.peers import betterauth_peer

PIP_HINT = "pip install -e '.[bench]'"

#: Python packages (import names) each in-process peer module needs.
PYTHON_PACKAGES = {
    "django": ("django", "psycopg"),
    "fastapi-users": ("fastapi_users", "fastapi_users_db_sqlalchemy"),
    "eventsourcing": ("eventsourcing", "psycopg", "psycopg_pool"),
}


def _absent(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def missing_for(module: str) -> str | None:
    """One line saying what the peer module lacks, or None when it can run."""
    absent = _absent(PYTHON_PACKAGES[module])
    if absent:
        return f"{module}: Python package {', '.join(absent)} missing ({PIP_HINT})"
    return None


def missing_for_http() -> str | None:
    if shutil.which("node") is None:
        return "BetterAuth: node is not installed (apt-get install nodejs npm)"
    if shutil.which("wrk") is None:
        return "BetterAuth: wrk is not installed (scripts/browser.sh wrk)"
    return betterauth_peer.missing()


def missing_for_charts() -> str | None:
    if importlib.util.find_spec("matplotlib") is None:
        return f"charts: Python package matplotlib missing ({PIP_HINT})"
    return None
