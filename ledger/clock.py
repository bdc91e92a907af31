"""Clocks. Everything that needs "now" takes a Clock so tests can control time."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, simulations, replays)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0.0, **kwargs: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = instant


def utc(instant: datetime) -> datetime:
    """Normalise a datetime to aware UTC (naive values are taken as UTC, as SQLite returns them)."""
    if instant.tzinfo is UTC:  # already (asyncpg's timestamps): no copy
        return instant
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


@functools.lru_cache(maxsize=16_384)
def iso_ms(instant: datetime) -> str:
    """ISO-8601 with milliseconds and ``Z``, as BetterAuth's JSON dates
    (``instant`` is UTC, naive or aware; the library's datetimes always are).

    Seven times on every get-session, mostly for the same few instants of a
    hot session: remembered (datetimes are immutable; equal aware instants
    are the same UTC instant, so they share one text)."""
    return utc(instant).isoformat(timespec="milliseconds")[:23] + "Z"
