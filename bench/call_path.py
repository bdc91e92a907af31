"""What reading ``GET /api/auth/get-session`` costs a newcomer (issue 17): the
project files and functions one request runs through, the longest functions
of the source, and the branches on the database dialect outside the
recorders. A measuring tool, not a test.

    .venv/bin/python -m bench.call_path [--source TREE] [--backends sqlite,postgresql]

``--source``: count an older source tree instead of this checkout (for
example ``git worktree add --detach /tmp/old81 81d09b1``); trees from before
the single namespace are run as they were (bare ``ledger.`` imports), see
:func:`bench.server.source_path`.

Definitions (the figures in bench/README.md use these):

* The path: the app is built in-process (``create_app`` with a ManualClock,
  migrated, no Redis), a user signs up, one untraced get-session warms it up;
  then one ``GET /api/auth/get-session?disableCookieCache=true`` (the store
  path) runs under a profile hook installed on every thread started since the
  tool began. A function counts when its code object, defined in the tree's
  ``ledger``, ``api``, ``projections``, ``workers`` or ``migrations``
  directories, is entered (module bodies excluded). Scenarios: ``read`` (no
  write due), ``touch`` (the clock moved past ``activity_interval``),
  ``refresh`` (moved past ``update_age``: the session is extended).
* Lines: the distinct source lines of those functions, from the ``def`` (or
  first decorator) to the end of the body per the AST; a nested function that
  runs is not counted twice.
* Longest functions: every function of those directories, by the same lines.
* Dialect branches: ``if`` / ``elif`` / ``while`` statements, conditional
  expressions, comprehension filters, ``match`` subjects and ``case`` guards
  whose test mentions a dialect, as a name, an attribute or a string
  (``dialect``, ``postgres``, ``sqlite``, ``asyncpg``, ``aiosqlite``, or ``pg``
  as a ``_``-separated word), in those directories except
  ``ledger/recorders/``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import httpx

from bench.server import PACKAGES, PASSWORD, SECRET, database, source_path

BASE = "http://testserver"
GET_SESSION = "/api/auth/get-session?disableCookieCache=true"
RECORDERS = Path("ledger") / "recorders"
SCENARIOS = ("read", "touch", "refresh")


@dataclass
class Trace:
    """The code objects entered while ``active`` by the request's task, the
    tasks it starts, and threads without an event loop (the drivers', the
    executors'). Other tasks of the app (the revocation feed's poll) are
    not on the request's path."""

    root: Path
    active: bool = False
    codes: set[CodeType] = field(default_factory=set)
    tasks: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)

    def hook(self, frame: FrameType, event: str, _arg: object) -> None:
        if not self.active or event != "call":
            return
        loop = asyncio._get_running_loop()
        if loop is None or asyncio.current_task(loop) in self.tasks:
            self.codes.add(frame.f_code)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the current task and the tasks started from a recorded one."""
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            task: asyncio.Task[Any] = (
                previous(loop, coro, **kwargs)  # type: ignore[assignment]
                if previous is not None
                else asyncio.Task(coro, loop=loop, **kwargs)
            )
            if self.active and asyncio.current_task(loop) in self.tasks:
                self.tasks.add(task)
            return task

        current = asyncio.current_task(loop)
        assert current is not None
        self.tasks.add(current)
        loop.set_task_factory(factory)
        self.active = True
        try:
            yield
        finally:
            self.active = False
            loop.set_task_factory(previous)

    def functions(self) -> dict[tuple[Path, int, str], range]:
        """(file, first line, name) -> the lines of each project function seen."""
        found: dict[tuple[Path, int, str], range] = {}
        for code in self.codes:
            path = project_file(self.root, code.co_filename)
            # Module bodies, comprehensions and lambdas: read as part of
            # their module or function.
            if path is None or code.co_name.startswith("<"):
                continue
            lines = span(self.root / path, code)
            found[(path, lines.start, code.co_qualname)] = lines
        return found


@cache
def project_file(root: Path, filename: str) -> Path | None:
    """``filename`` relative to ``root`` when it is in one of the packages."""
    try:
        rel = Path(filename).resolve().relative_to(root)
    except ValueError:
        return None
    return rel if rel.parts[0] in PACKAGES else None


@cache
def spans(path: Path) -> dict[int, range]:
    """First line (``def`` and first decorator alike) -> lines of each function in ``path``."""
    found: dict[int, range] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            lines = range(first, (node.end_lineno or node.lineno) + 1)
            found.setdefault(first, lines)
            found.setdefault(node.lineno, lines)
    return found


def span(path: Path, code: CodeType) -> range:
    """The lines of a function (its AST node; the code object's lines when none matches)."""
    lines = spans(path).get(code.co_firstlineno)
    if lines is not None:
        return lines
    last = max((line for *_, line in code.co_lines() if line is not None), default=0)
    return range(code.co_firstlineno, max(last, code.co_firstlineno) + 1)


def distinct_lines(functions: dict[tuple[Path, int, str], range]) -> int:
    return len({(path, line) for (path, _, _), lines in functions.items() for line in lines})


def summed_lines(functions: dict[tuple[Path, int, str], range]) -> int:
    return sum(len(lines) for lines in functions.values())


async def traced(prefix: str, url: str, scenario: str, trace: Trace) -> None:
    """Build the app on ``url``, sign up, and trace one store-path get-session."""
    create_app = importlib.import_module(prefix + "api.app").create_app
    manual_clock = importlib.import_module(prefix + "ledger.clock").ManualClock
    load_settings = importlib.import_module(prefix + "ledger.config").load_settings
    settings = load_settings(environment="test", database_url=url, base_url=BASE, secrets=[SECRET])
    clock = manual_clock()
    app = create_app(settings, clock=clock, migrate=True, demo=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"origin": BASE, "user-agent": "bench-call-path"}
        async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as client:
            body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
            (await client.post("/api/auth/sign-up/email", json=body)).raise_for_status()
            (await client.get(GET_SESSION)).raise_for_status()
            policy = settings.session
            if scenario == "touch":
                clock.advance(seconds=policy.activity_interval + 1)
            elif scenario == "refresh":
                clock.advance(seconds=policy.update_age + 1)
            with trace.recording():
                response = await client.get(GET_SESSION)
            response.raise_for_status()
            if not response.json() or not response.json().get("session"):
                raise RuntimeError(f"{scenario}: get-session answered without a session")


def source_files(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def longest(root: Path, n: int) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for path in source_files(root):
        rel = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = (node.end_lineno or node.lineno) - first + 1
                found.append((size, f"{rel}:{node.lineno} {node.name}"))
    return sorted(found, key=lambda item: (-item[0], item[1]))[:n]


DIALECT = re.compile(r"dialect|postgres|sqlite|asyncpg|(?:^|_)pg(?:_|$)", re.IGNORECASE)


def mentions_dialect(test: ast.AST) -> bool:
    for node in ast.walk(test):
        word = None
        if isinstance(node, ast.Name):
            word = node.id
        elif isinstance(node, ast.Attribute):
            word = node.attr
        elif isinstance(node, ast.alias):
            word = node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            word = node.value
        if word is not None and DIALECT.search(word):
            return True
    return False


def branch_tests(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While | ast.IfExp):
            yield node.test
        elif isinstance(node, ast.comprehension):
            yield from node.ifs
        elif isinstance(node, ast.Match):
            yield node.subject
        elif isinstance(node, ast.match_case) and node.guard is not None:
            yield node.guard


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants in ``tree``."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.add(id(value))
    return found


def dialect_lines(tree: ast.AST) -> int:
    """Code lines naming a dialect (as in :func:`mentions_dialect`; docstrings
    and comments excluded)."""
    skip = docstrings(tree)
    lines = {
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Name | ast.Attribute | ast.Constant | ast.alias)
        and id(node) not in skip
        and mentions_dialect(node)
    }
    return len(lines)


def dialect_branches(root: Path) -> dict[str, tuple[int, int]]:
    """module -> (dialect branches, code lines naming a dialect), outside the recorders."""
    counts: dict[str, tuple[int, int]] = {}
    for path in source_files(root):
        rel = path.relative_to(root)
        if rel.is_relative_to(RECORDERS):
            continue
        tree = ast.parse(path.read_text(), str(path))
        branches = sum(1 for test in branch_tests(tree) if mentions_dialect(test))
        named = dialect_lines(tree)
        if branches or named:
            counts[str(rel)] = (branches, named)
    return counts


def backends_available(wanted: list[str]) -> list[str]:
    if "postgresql" not in wanted:
        return wanted
    try:
        with database("postgresql"):
            pass
    except OSError as exc:
        print(f"postgresql: not reachable ({exc}); skipped")
        return [b for b in wanted if b != "postgresql"]
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="an older source tree (default: this one)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--longest", type=int, default=10)
    parser.add_argument("--list", action="store_true", help="print every function on each path")
    args = parser.parse_args()
    prefix = "session_ledger."
    if args.source is not None:
        path, cli = source_path(args.source.resolve())
        sys.path.insert(0, str(path))
        prefix = cli.removesuffix("api.cli")
    package = importlib.import_module(prefix + "api")
    root = Path(package.__file__ or "").resolve().parents[1]
    print(f"source: {root}" + (f" (imports {prefix}api)" if prefix else " (imports bare api)"))

    print(
        f"\n{'backend':11} {'scenario':9} {'files':>5} {'functions':>9} {'lines':>6} {'summed':>6}"
    )
    for backend in backends_available(args.backends.split(",")):
        for scenario in SCENARIOS:
            trace = Trace(root)
            # Every thread started from here on (aiosqlite's, executors') runs
            # the hook too; it records only while a traced request runs.
            threading.setprofile(trace.hook)
            sys.setprofile(trace.hook)
            try:
                with database(backend) as url:
                    asyncio.run(traced(prefix, url, scenario, trace))
            finally:
                sys.setprofile(None)
                threading.setprofile(None)
            functions = trace.functions()
            files = {path for path, _, _ in functions}
            print(
                f"{backend:11} {scenario:9} {len(files):5} {len(functions):9} "
                f"{distinct_lines(functions):6} {summed_lines(functions):6}"
            )
            if args.list:
                for (path, first, name), lines in sorted(functions.items()):
                    print(f"    {path}:{first} {name} ({len(lines)} lines)")

    print("\nlongest functions (lines from the def or first decorator):")
    for size, where in longest(root, args.longest):
        print(f"  {size:4}  {where}")

    counts = dialect_branches(root)
    branching = {module: c for module, c in counts.items() if c[0]}
    print(
        f"\ndialect branches outside {RECORDERS}/: {sum(b for b, _ in counts.values())} "
        f"in {len(branching)} modules; code lines naming a dialect: "
        f"{sum(n for _, n in counts.values())} in {len(counts)} modules"
    )
    print(f"  {'branches':>8} {'lines':>5}  module")
    for module, (branches, named) in sorted(
        counts.items(), key=lambda item: (-item[1][0], -item[1][1], item[0])
    ):
        print(f"  {branches:8} {named:5}  {module}")


if __name__ == "__main__":
    main()
