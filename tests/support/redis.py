"""Redis helpers for tests: every test writes under its own key prefix."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def client(url: str) -> Any:
    """A redis.asyncio.Redis client. Typed Any on purpose: the installed
    types-redis stubs (redis 4.x) shadow redis 8's own annotations and lack
    ``aclose()``; annotate parameters in tests as ``redis.asyncio.Redis``."""
    return aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix``; the number deleted."""
    if not prefix or any(c in prefix for c in "*?[]\\"):
        raise ValueError(f"refusing to delete by unsafe prefix {prefix!r}")
    redis = client(url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=500)]
        return int(await redis.unlink(*keys)) if keys else 0
    finally:
        await redis.aclose()
