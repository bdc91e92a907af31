"""The hot reads' own Redis connection (projections.redis_wire), against a
private redis-server: replies in order under concurrency, errors as
redis-py's types, a lost or stalled connection failing fast and coming back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from session_ledger.projections.redis_wire import WireConnection, wire_for
from tests.support.redis import RedisProcess


async def test_concurrent_requests_pipeline_on_one_connection(private_redis: RedisProcess) -> None:
    wire = wire_for(aioredis.from_url(private_redis.url))
    assert wire is not None
    try:
        await asyncio.gather(*(wire.call("SET", f"k{i}", f"v{i}") for i in range(200)))
        values = await asyncio.gather(*(wire.call("GET", f"k{i}") for i in range(200)))
        assert values == [f"v{i}".encode() for i in range(200)]
        assert await wire.call("GET", "missing") is None
        assert await wire.call("EVAL", "return {1, 'x', false}", 0) == [1, b"x", None]
        with pytest.raises(NoScriptError):
            await wire.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await wire.call("INCR", "k1")  # not an integer
        assert await wire.call("GET", "k1") == b"v1"  # the connection is still in step
    finally:
        wire.close()


async def test_a_lost_connection_fails_fast_and_comes_back(private_redis: RedisProcess) -> None:
    wire = WireConnection(port=private_redis.port, timeout=1, connect_timeout=1)
    try:
        assert await wire.call("PING") == b"PONG"
        private_redis.kill()
        with pytest.raises(RedisConnectionError):
            await wire.call("PING")
        with pytest.raises(RedisConnectionError):
            await wire.call("PING")  # refused: no server
        private_redis.start()
        assert await wire.call("PING") == b"PONG"
    finally:
        wire.close()


async def test_a_stalled_server_times_out_and_the_connection_is_replaced(
    private_redis: RedisProcess,
) -> None:
    admin: Any = aioredis.from_url(private_redis.url)
    wire = WireConnection(port=private_redis.port, timeout=0.2)
    try:
        await wire.call("SET", "k", "v")
        await admin.execute_command("CLIENT", "PAUSE", 600, "ALL")
        waiting = [asyncio.create_task(wire.call("GET", "k")) for _ in range(3)]
        for task in waiting:
            with pytest.raises(RedisTimeoutError):
                await task
        await asyncio.sleep(0.6)
        assert await wire.call("GET", "k") == b"v"  # a new connection, in step
    finally:
        wire.close()
        await admin.aclose()


async def test_password_and_database_are_those_of_the_client(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", "--requirepass", "s3cret")
    server.start()
    try:
        client: Any = aioredis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        await client.set("where", "db3")
        wire = wire_for(client)
        assert wire is not None
        try:
            assert await wire.call("GET", "where") == b"db3"
        finally:
            wire.close()
            await client.aclose()
        refused = WireConnection(port=server.port, password="wrong")
        with pytest.raises(ResponseError):
            await refused.call("PING")
    finally:
        server.kill()


def test_tls_and_cluster_clients_keep_redis_py() -> None:
    assert wire_for(aioredis.from_url("rediss://127.0.0.1:6380/0")) is None
    assert wire_for(object()) is None


def test_works_on_uvloop_as_the_service_runs(private_redis: RedisProcess) -> None:
    """``session-ledger serve`` runs uvloop, whose transports are not asyncio's."""

    async def main() -> list[Any]:
        wire = WireConnection(port=private_redis.port)
        try:
            await wire.call("SET", "k", "v")
            return list(await asyncio.gather(*(wire.call("GET", "k") for _ in range(10))))
        finally:
            wire.close()

    assert uvloop.run(main()) == [b"v"] * 10
