"""BetterAuth's own JavaScript client (``better-auth/client``,
``createAuthClient``, from the npm registry at the version in the committed
package-lock.json) against ``session-ledger serve``: sign-up, sign-in,
getSession, listSessions, revokeSession with the token from getSession,
revokeOtherSessions, updateSession, revokeSessions, signOut
(``betterauth_client/drive.mjs``). scripts/node_deps.sh installs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.e2e.conftest import free_port, running_server, server_env

PROJECT = Path(__file__).parent / "betterauth_client"


def test_betterauth_client_drives_the_session_endpoints(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (PROJECT / "node_modules" / "better-auth").is_dir():
        raise RuntimeError("BetterAuth's client is not installed: run scripts/node_deps.sh")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **server_env(tmp_path, base),
        "SESSION_LEDGER_SESSION__ADDITIONAL_FIELDS": '{"theme": {"type": "string"}}',
    }
    with running_server(tmp_path, env, port, base):
        result = subprocess.run(
            [node, "drive.mjs", base],
            cwd=PROJECT,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert steps[-1] == {"done": True}
    done = {s["step"] for s in steps if "step" in s}
    for method in [
        "signUp",
        "signIn",
        "getSession",
        "listSessions",
        "revokeSession (token from getSession)",
        "revokeOtherSessions",
        "updateSession",
        "revokeSessions",
        "signOut",
    ]:
        assert method in done
