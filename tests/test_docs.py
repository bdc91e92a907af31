"""Docs that run: the README's Python example is a script the tests run,
its links resolve inside the repository, and the protected-app example
works under plain uvicorn as its docstring says to run it."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def _readmes() -> list[Path]:
    skip = {".venv", "node_modules", ".git", "artifacts", "build"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}


def test_the_python_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Chrome 120 on Mac OS X, 203.0.113.5" in done.stdout
    assert "(this device)" in done.stdout
    assert "SessionRevoked (sign_out)" in done.stdout


def test_the_readme_quotes_the_example_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using it from Python", 1)[1]
    quoted = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert quoted is not None
    assert quoted.group(1) == (ROOT / "examples" / "python_api.py").read_text()


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: A document named in backquotes as a path, e.g. `docs/reference/betterauth-sessions.md`:
#: a reader goes looking for it as for a link (code may name files still to be
#: written, as bench/README.md does).
CODE_PATH = re.compile(r"`((?:\w[\w.-]*/)+[\w.-]+\.md)`")


@pytest.mark.parametrize("readme", _readmes(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(readme: Path) -> None:
    text = readme.read_text()
    targets = [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:|^#", t)]
    broken = []
    for target in targets:
        path = (readme.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    for named in CODE_PATH.findall(text):
        if not (ROOT / named).exists() and not (readme.parent / named).exists():
            broken.append(named)
    assert broken == []


def test_the_protected_example_accepts_its_own_origin_under_plain_uvicorn(
    tmp_path: Path,
) -> None:
    """The commands from examples/protected_app.py's docstring, on a free port."""
    doc = (ROOT / "examples" / "protected_app.py").read_text()
    block = doc.split("uvicorn's)::\n\n", 1)[1].split("\n\n", 1)[0]
    port = free_port()
    env: dict[str, str] = {}
    command: list[str] = []
    for line in block.replace("8000", str(port)).splitlines():
        words = shlex.split(line.strip())
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            # $(openssl rand -base64 32): a random secret of that form
            env[name] = secrets.token_urlsafe(32) if value.startswith("$(") else value
        else:
            command = words
    command[0] = str(Path(sys.executable).parent / command[0])
    origin = env["SESSION_LEDGER_BASE_URL"]
    assert origin == f"http://127.0.0.1:{port}"  # the address uvicorn says it runs on
    server = subprocess.Popen(
        [*command, "--app-dir", str(ROOT)],
        env={**_clean_env(), **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "uvicorn.log").open("w"),
    )
    try:
        with httpx.Client(base_url=origin, timeout=10) as client:
            for _ in range(300):
                assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
                try:
                    client.get("/api/auth/get-session")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            signed_up = client.post(
                "/api/auth/sign-up/email",
                json={"email": "ada@example.com", "password": "correct horse battery"},
                headers={"origin": origin},
            )
            assert signed_up.status_code == 200, signed_up.text
            assert client.get("/api/protected").json()["message"] == "hello ada@example.com"
            foreign = client.post("/api/auth/sign-out", headers={"origin": "http://evil.example"})
            assert foreign.status_code == 403
            assert client.post("/api/auth/sign-out", headers={"origin": origin}).status_code == 200
    finally:
        server.terminate()
        server.wait(10)
