"""A PostgreSQL server of our own (initdb / pg_ctl from the Debian binaries)
on a free loopback port, for tests that stop, restart or kill it: faults
there cannot touch the shared test server.

The server runs as the ``postgres`` OS user when we are root (PostgreSQL
refuses to run as root), with fsync off (a throw-away cluster: the machine
does not crash, only the server does), trust authentication on loopback
only. ``synchronous_commit`` stays on: a commit is acknowledged only once
its WAL is written, so killing the server loses nothing acknowledged.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.redis import free_port

SERVER_OPTIONS = (
    "-c fsync=off -c full_page_writes=off "
    "-c max_connections=200 -c shared_buffers=32MB -c listen_addresses=127.0.0.1 "
    "-c unix_socket_directories={socket_dir} -c port={port}"
)
#: A server as durable as a production one (fsync, full page writes): what a
#: benchmark of commits must pay for.
DURABLE_SERVER_OPTIONS = (
    "-c max_connections=200 -c shared_buffers=128MB -c listen_addresses=127.0.0.1 "
    "-c unix_socket_directories={socket_dir} -c port={port}"
)


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL's server binaries (pg_ctl) are not installed")
    return Path(pg_ctl).parent


class PostgresProcess:
    """A throw-away PostgreSQL cluster in its own directory."""

    def __init__(self, workdir: Path | None = None, options: str = SERVER_OPTIONS) -> None:
        self.bin = _bin_dir()
        #: ``postgres -o`` options, with ``{socket_dir}`` and ``{port}`` to fill.
        self.options = options
        self._tmp = None
        if workdir is None:
            # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
            self._tmp = tempfile.mkdtemp(prefix="sl-pg-")
            workdir = Path(self._tmp)
        self.workdir = workdir
        self.data = workdir / "data"
        self.socket_dir = workdir / "sock"
        self.log = workdir / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    # ------------------------------------------------------------ commands

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=timeout, text=True)
        if check and done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()}\n{log}")

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.workdir)], check=True)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = self.options.format(socket_dir=self.socket_dir, port=self.port)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m <mode>``: every connection is cut."""
        options = self.options.format(socket_dir=self.socket_dir, port=self.port)
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-m", mode,
            "-w", "restart",
        )  # fmt: skip
        self.wait_ready()

    def kill_postmaster(self) -> None:
        """SIGKILL to the postmaster (a crash). Its children notice and exit
        (the next start refuses while they still hold shared memory, so this
        waits for them); the next start runs crash recovery."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(c) for c in [pid, *children]):
            time.sleep(0.02)
        for child in children:  # stragglers: a crash takes them all
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        # Nobody may reap the dead postmaster (an init that does not), and
        # PostgreSQL refuses to start while the PID in its lock file exists,
        # zombie or not: the lock file of a dead postmaster goes, as an
        # operator would remove it.
        if not _alive(pid):
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            for name in (f".s.PGSQL.{self.port}", f".s.PGSQL.{self.port}.lock"):
                (self.socket_dir / name).unlink(missing_ok=True)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not come up on port {self.port}")

    def destroy(self) -> None:
        self.stop("immediate")
        if self.postmaster_pid() is not None:
            self.kill_postmaster()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # ---------------------------------------------------------------- URLs

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command may contain spaces and parentheses: split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"  # a zombie has exited
