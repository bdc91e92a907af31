"""uvicorn's httptools protocol with a cap on the request head.

httptools (llhttp) has no limit of its own on the request line and headers,
and uvicorn sets none for it (``h11_max_incomplete_event_size`` applies to
h11 only): a client could send one header of many megabytes, and httptools
would buffer it, concatenating as it goes. This protocol counts the bytes a
connection sends while a request head is incomplete and, past
``MAX_HEAD_BYTES``, answers 431 and closes the connection. Memory per
connection is then bounded by the cap plus one read (at most 256 KiB).

``session-ledger serve`` runs uvicorn with it; an application served by
uvicorn itself can pass it as ``uvicorn.run(..., http=BoundedHttpToolsProtocol)``.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: The request line and all headers together; cookies alone are capped at
#: 8 KiB by api.middleware.LimitsMiddleware.
MAX_HEAD_BYTES = 16 * 1024


class _HeadTooLargeError(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        #: Raw bytes received while the current head is incomplete (bounds
        #: what httptools buffers of a header still arriving).
        self._raw_head_bytes = 0
        #: The parsed request line and headers of the current head (catches
        #: a head that arrives, complete, in one read).
        self._parsed_head_bytes = 0
        self._heads_done = 0
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        heads_done = self._heads_done
        super().data_received(data)
        # Counted after feeding: a read that completes a head (and carries
        # the start of a body) must not count against the head.
        if self._in_head and heads_done == self._heads_done and not self.transport.is_closing():
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self.max_head_bytes:
                self._send_431()

    def on_message_begin(self) -> None:
        self._parsed_head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_head_bytes:
            self._too_large = True
            # Stops the parser: httptools raises it on as a parser error,
            # which uvicorn answers with send_400_response (below).
            raise _HeadTooLargeError

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._send_431()
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head_bytes = 0
        self._heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def _send_431(self) -> None:
        body = json.dumps(
            {
                "code": "REQUEST_HEADER_FIELDS_TOO_LARGE",
                "message": f"request head is larger than {self.max_head_bytes} bytes",
            }
        ).encode()
        self._too_large = True
        self.logger.warning("Request head larger than %d bytes.", self.max_head_bytes)
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: application/json\r\n",
                    b"cache-control: no-store\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
