"""The domain stays pure: the import-linter contract in ``pyproject.toml``
holds on the code, and it does catch a violation, direct or through another
module (checked on a small probe package laid out like ours)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT

DOMAIN = "session_ledger.ledger.domain"
FORBIDDEN = {
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "redis",
    "pydantic_settings",
    "fastapi",
    "starlette",
}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _domain_contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["include_external_packages"] is True
    (contract,) = [c for c in config["contracts"] if c.get("source_modules") == [DOMAIN]]
    return dict(contract)


def test_the_contract_forbids_io_settings_and_web_frameworks() -> None:
    contract = _domain_contract()
    assert contract["type"] == "forbidden"
    assert contract.get("allow_indirect_imports", False) is False
    assert set(contract["forbidden_modules"]) >= FORBIDDEN | {"session_ledger.ledger.config"}


def test_importing_the_domain_loads_none_of_them() -> None:
    modules = sorted(p.stem for p in (ROOT / "ledger" / "domain").glob("*.py"))
    code = (
        "import sys\n"
        + "".join(f"import {DOMAIN}.{m}\n" for m in modules if m != "__init__")
        + "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    roots = {name.partition(".")[0] for name in loaded}
    assert not roots & FORBIDDEN
    ours = {n for n in loaded if n.startswith("session_ledger.")}
    assert all(n.startswith(DOMAIN) or n in ("session_ledger.ledger",) for n in ours), ours


def _probe(tmp_path: Path, domain_imports: str) -> subprocess.CompletedProcess[str]:
    """lint-imports with our contract, renamed onto a probe package whose
    domain imports ``domain_imports`` (its config imports pydantic_settings)."""
    package = tmp_path / "probe"
    for directory in (package, package / "ledger", package / "ledger" / "domain"):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "__init__.py").write_text("")
    (package / "ledger" / "config.py").write_text("import pydantic_settings\n")
    (package / "ledger" / "domain" / "rules.py").write_text(domain_imports)
    contract = _domain_contract()
    renamed = [m.replace("session_ledger", "probe") for m in contract["forbidden_modules"]]
    listed = ", ".join(f'"{m}"' for m in renamed if not m.startswith("probe.") or "config" in m)
    (tmp_path / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_packages = ["probe"]\ninclude_external_packages = true\n\n'
        "[[tool.importlinter.contracts]]\n"
        f'name = "domain"\ntype = "forbidden"\nsource_modules = ["probe.ledger.domain"]\n'
        f"forbidden_modules = [{listed}]\n"
    )
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "contracts.toml"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contract_passes_a_pure_domain(tmp_path: Path) -> None:
    done = _probe(tmp_path, "import datetime\nimport pydantic\n")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "imports",
    [
        "import sqlalchemy\n",
        "from redis import asyncio\n",
        "import starlette.requests\n",
        "from probe.ledger import config\n",  # settings, and pydantic_settings through it
    ],
)
def test_the_contract_refuses_an_impure_domain(tmp_path: Path, imports: str) -> None:
    done = _probe(tmp_path, imports)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout
