"""``session-ledger serve`` with no configuration, as the README's first
command runs it: the page's own requests must pass the CSRF origin check
under every loopback name (they failed as INVALID_ORIGIN on 127.0.0.1, the
address serve printed, while the default base URL said localhost:8000), and
it signs with a secret of its own, never one from the source."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, running_server


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_the_demo_page_origin_is_trusted_out_of_the_box(default_server: int, name: str) -> None:
    page = f"http://{name}:{default_server}"
    with httpx.Client(base_url=f"http://127.0.0.1:{default_server}") as client:
        assert client.get("/").status_code == 200
        signed_up = client.post(
            "/api/auth/sign-up/email",
            json={
                "email": f"ada-{name}@example.com",
                "password": "correct horse battery",
                "name": "Ada",
            },
            headers={"origin": page},
        )
        assert signed_up.status_code == 200, signed_up.text
        # With the cookie set, a foreign origin is still refused, and the
        # page's own cookie-carrying POST passes.
        foreign = client.post("/api/auth/sign-out", headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
        out = client.post("/api/auth/sign-out", headers={"origin": page})
        assert out.json() == {"success": True}


def _children(pid: int) -> list[int]:
    """The server processes uvicorn started (multiprocessing, spawned)."""
    tasks = Path(f"/proc/{pid}/task")
    children = [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_serve_workers_runs_processes_on_one_port_each_with_its_feed(tmp_path: Path) -> None:
    """``serve --workers 2`` on SQLite: two server processes behind one port; a
    sign-out through either is honoured by both, cookie cache included."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    with running_server(tmp_path, env, port, base, "--workers", "2") as server:
        deadline = time.monotonic() + 60
        while len(_children(server.pid)) < 2:  # the second may still be starting
            assert time.monotonic() < deadline, _children(server.pid)
            time.sleep(0.1)
        signed_up = httpx.post(
            f"{base}/api/auth/sign-up/email",
            json={"email": "ada@example.com", "password": "correct horse battery"},
            headers={"origin": base},
        )
        assert signed_up.status_code == 200, signed_up.text
        cookies = dict(signed_up.cookies)
        # New connections: the kernel hands them to either process.
        for _ in range(10):
            answer = httpx.get(f"{base}/api/auth/get-session", cookies=cookies)
            assert answer.json()["user"]["email"] == "ada@example.com"
        out = httpx.post(f"{base}/api/auth/sign-out", cookies=cookies, headers={"origin": base})
        assert out.json() == {"success": True}
        time.sleep(0.5)  # the other process's feed polls the ledger's tail
        for _ in range(20):
            assert httpx.get(f"{base}/api/auth/get-session", cookies=cookies).json() is None


def test_with_no_secret_the_loopback_server_generates_a_private_one(
    default_server: int, tmp_path: Path
) -> None:
    secret = tmp_path / "session-ledger.db.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 60
    log = (tmp_path / "server.log").read_text()
    assert f"development secret generated in {secret}" in " ".join(log.split())


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])  # noqa: S104 (refused before binding)
def test_without_secrets_serve_refuses_any_other_bind(tmp_path: Path, host: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "session-ledger"), "serve", "--host", host],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SESSION_LEDGER_SECRETS" in lines[0]
    assert not (tmp_path / "session-ledger.db.secret").exists()


def test_production_limits_sign_in_and_serves_its_metrics(tmp_path: Path) -> None:
    """Rate limits are on by default in production, and ``--metrics-port``
    exposes what they refused."""
    port, metrics = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")},
        "SESSION_LEDGER_ENVIRONMENT": "production",
        "SESSION_LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        "SESSION_LEDGER_BASE_URL": base,
        "SESSION_LEDGER_SECRETS": '["e2e-secret-0123456789abcdef0123456789"]',
    }
    with running_server(tmp_path, env, port, base, "--metrics-port", str(metrics)):
        body = {"email": "nobody@example.com", "password": "correct horse battery"}
        answers = [
            httpx.post(f"{base}/api/auth/sign-in/email", json=body, headers={"origin": base})
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert answers[-1].headers["x-retry-after"] == answers[-1].headers["retry-after"]
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
    assert 'session_ledger_rate_limited_total{rule="/sign-in/*"} 1.0' in text
