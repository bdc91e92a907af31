"""What ``session-ledger serve`` does at the transport: forwarding headers
are not uvicorn's to trust, and a request head has a size limit."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import free_port, running_server, server_env

HEAD_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """One server for this module's tests: (base URL, process id)."""
    workdir = tmp_path_factory.mktemp("transport")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(workdir, server_env(workdir, base), port, base) as process:
        yield base, process.pid


def raw_request(base: str, head_extra: bytes, *, timeout: float = 10) -> bytes:
    """Send one GET /healthz with ``head_extra`` in its head; what came back."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head_extra + b"\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break
        return received


def test_x_forwarded_for_from_loopback_is_not_trusted_by_default(
    served: tuple[str, int],
) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: the spoofed
    address was recorded in the ledger although trusted_proxies is empty."""
    server = served[0]
    with httpx.Client(base_url=server, headers={"origin": server}) as client:
        signed_up = client.post(
            "/api/auth/sign-up/email",
            json={"email": "ada@example.com", "password": "correct horse battery"},
            headers={"x-forwarded-for": "203.0.113.66", "x-real-ip": "203.0.113.67"},
        )
        assert signed_up.status_code == 200, signed_up.text
        session = client.get("/api/auth/get-session").json()["session"]
        assert session["ipAddress"] == "127.0.0.1"


def test_the_request_head_is_capped(served: tuple[str, int]) -> None:
    server = served[0]
    small = raw_request(server, b"x-pad: " + b"a" * 8 * 1024 + b"\r\n")
    assert small.startswith(b"HTTP/1.1 200")
    large = raw_request(server, b"x-pad: " + b"a" * (HEAD_LIMIT + 4096) + b"\r\n")
    assert large.startswith(b"HTTP/1.1 431")
    assert b'"code": "REQUEST_HEADER_FIELDS_TOO_LARGE"' in large


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_headers_are_cut_off_without_growing_the_server(served: tuple[str, int]) -> None:
    """8 concurrent 32 MiB headers grew the server by about 155 MiB before;
    now each connection is closed once its head passes the limit."""
    base, pid = served
    httpx.get(f"{base}/healthz")
    before = _rss_kib(pid)
    answers: list[bytes | str] = []

    def flood() -> None:
        try:
            answers.append(raw_request(base, b"x-big: " + b"a" * (32 << 20) + b"\r\n"))
        except OSError as exc:  # the server closed on us mid-send: also fine
            answers.append(type(exc).__name__)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8
    assert all(isinstance(a, str) or a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers), (
        answers
    )
    grown_mib = (_rss_kib(pid) - before) / 1024
    assert grown_mib < 32, f"server grew by {grown_mib:.0f} MiB"
    assert httpx.get(f"{base}/healthz").status_code == 200
