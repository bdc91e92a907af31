"""One pipelined connection for the hottest Redis reads (a cache hit),
without redis-py's per-command machinery.

redis-py's asyncio client spends most of a cache hit in Python: a pool
checkout and return, a connection health check, command packing through
its encoder, a read through its stream reader, a response callback. A hit
cost more than a PostgreSQL lookup on asyncpg (bench/README.md), which is
why the Redis path did not pay for itself. Here the same hiredis
parser redis-py uses reads replies straight from an asyncio protocol, and
requests go out on one connection as they come: Redis answers the commands
of a connection in order, so concurrent requests pipeline on it and each
waits on its own future.

Only for a plain (TCP or Unix socket) connection to one Redis: TLS and
Cluster clients keep using redis-py (:func:`wire_for` gives None). Anything
that goes wrong (a refused or lost connection, a timeout) fails every
request in flight with redis-py's own error types, closes the connection,
and the next request opens a new one; the caller (the cached read model)
answers from the store meanwhile. A reply that does not come within the
client's ``socket_timeout`` closes the connection too: the order of
replies on it could no longer be trusted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_TIMEOUT = 2.0


def _encode(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def pack(args: tuple[object, ...]) -> bytes:
    """A command in RESP, the Redis wire protocol."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.reader = hiredis.Reader()
        self.timeout = timeout
        self.waiting: deque[asyncio.Future[Any]] = deque()
        #: When each request in ``waiting`` was sent (loop time).
        self.sent_at: deque[float] = deque()
        #: One timer for all requests: it looks at the oldest (see _check).
        self._watch: asyncio.TimerHandle | None = None
        # asyncio's or uvloop's (which is no asyncio.Transport subclass).
        self.transport: Any = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:  # nobody asked: the stream is out of step
                self.close(RedisConnectionError("unexpected reply from Redis"))
                return
            future = self.waiting.popleft()
            self.sent_at.popleft()
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})"))

    def close(self, error: Exception) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.sent_at.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(future)
        self.sent_at.append(loop.time())
        self.transport.write(data)
        if self._watch is None:
            self._watch = loop.call_at(loop.time() + self.timeout, self._check)
        return future

    def _check(self) -> None:
        """The oldest request unanswered for ``timeout``: the connection is
        closed (every request on it fails, the order of later replies could
        not be trusted). Else look again when the oldest one would be due.
        One timer per connection, not one per request."""
        self._watch = None
        if self.lost or not self.sent_at:
            return
        loop = asyncio.get_running_loop()
        due = self.sent_at[0] + self.timeout
        if loop.time() >= due:
            self.close(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._watch = loop.call_at(due, self._check)


class WireConnection:
    """Requests to one Redis on one lazily opened, pipelined connection."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.connect_timeout = connect_timeout or DEFAULT_TIMEOUT
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def call(self, *args: object) -> Any:
        """Send one command; its reply (bytes, int, list or None)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.send(pack(args))

    async def _connect(self) -> _Protocol:
        # One connect at a time: concurrent callers wait for the same one.
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        connecting: asyncio.Future[_Protocol] = asyncio.get_running_loop().create_future()
        self._connecting = connecting
        try:
            protocol = await asyncio.wait_for(self._open(), self.connect_timeout)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, RedisError)
                else RedisConnectionError(f"cannot connect to Redis ({type(exc).__name__}: {exc})")
            )
            connecting.set_exception(error)
            connecting.exception()  # retrieved: no "never retrieved" warning
            if isinstance(exc, OSError | TimeoutError):
                raise error from exc
            raise
        finally:
            self._connecting = None
        self._protocol = protocol
        connecting.set_result(protocol)
        return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        timeout = self.timeout
        if self.path is not None:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(timeout), self.path)
        else:
            _, protocol = await loop.create_connection(
                lambda: _Protocol(timeout), self.host, self.port
            )
        try:
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                await protocol.send(pack(("AUTH", *auth)))
            if self.db:
                await protocol.send(pack(("SELECT", self.db)))
        except BaseException:
            protocol.close(RedisConnectionError("Redis refused the connection's setup"))
            raise
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.lost:
            protocol.close(RedisConnectionError("closed"))


def wire_for(client: Any) -> WireConnection | None:
    """A WireConnection to what ``client`` (redis-py asyncio) connects to,
    or None when it cannot be served so (TLS, Cluster, anything unusual)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # RedisCluster
        return None
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    if kwargs.get("credential_provider") is not None:
        return None
    common: dict[str, Any] = {
        "db": int(kwargs.get("db") or 0),
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
        "timeout": kwargs.get("socket_timeout"),
        "connect_timeout": kwargs.get("socket_connect_timeout"),
    }
    if pool.connection_class is UnixDomainSocketConnection:
        return WireConnection(path=str(kwargs["path"]), **common)
    if pool.connection_class is Connection:
        host, port = str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))
        return WireConnection(host=host, port=port, **common)
    return None
