"""The distribution installs under one namespace, ``session_ledger``: a host
application with its own ``api`` package (most FastAPI projects) can install
and use us beside it.

The wheel is built from this checkout and installed, without its
dependencies, into a fresh virtualenv whose only other path is this
environment's site-packages (for the dependencies; its editable-install
hooks are not run there, so the checkout itself is not importable). A
throw-away host package named ``api`` sits on the path; the host's code
imports both.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

from tests.e2e.conftest import ROOT

DIRECTORIES = ("ledger", "projections", "workers", "api", "migrations")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_package_directory_is_installed_under_the_namespace() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        "session_ledger." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in DIRECTORIES
        for init in (ROOT / top).rglob("__init__.py")
        if "node_modules" not in init.parts
    }
    assert set(config["packages"]) == on_disk
    assert config["package-dir"] == {f"session_ledger.{d}": d for d in DIRECTORIES}


def test_the_wheel_installs_beside_a_host_package_named_api(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("session_ledger-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).strip()
    )
    # The dependencies come from this environment, added as a plain path: the
    # editable install's .pth hooks of this checkout do not run there.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "-q",
        "--target",
        site,
        wheel,
        cwd=tmp_path,
    )

    host = tmp_path / "host"
    (host / "api").mkdir(parents=True)
    (host / "api" / "__init__.py").write_text('WHO = "the host application"\n')
    code = (
        "import api, session_ledger.api.app as ours\n"
        "from session_ledger.migrations import alembic_config\n"
        "from session_ledger.ledger.domain.events import SessionCreated\n"
        "assert api.WHO == 'the host application', api.__file__\n"
        f"assert ours.__file__.startswith({str(site)!r}), ours.__file__\n"
        "assert (ours.STATIC / 'index.html').is_file()\n"
        "print(len(list(alembic_config().get_main_option('script_location') or '')) > 0)\n"
    )
    out = _run(python, "-c", code, cwd=host, env={"PYTHONPATH": str(host), "PATH": "/usr/bin"})
    assert out.strip() == "True"

    # The console script's entry point and the packaged migrations work from the wheel.
    database = tmp_path / "db.sqlite"
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(script,) = entry_points(group='console_scripts', name='session-ledger')\n"
        f"sys.argv = ['session-ledger', 'migrate', '--database-url', "
        f"'sqlite+aiosqlite:///{database}']\n"
        "script.load()()\n"
    )
    _run(python, "-c", code, cwd=host, env={"PYTHONPATH": str(host), "PATH": "/usr/bin"})
    assert database.is_file()
