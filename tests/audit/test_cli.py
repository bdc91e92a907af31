"""``session-ledger audit ...`` and ``verify-ledger``: formats, pagination,
bad arguments (one line on stderr, exit code 2, nothing touched)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner, Result

from session_ledger.api.cli import app
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import RevocationReason
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.integrity import record_digest
from session_ledger.ledger.service import RequestContext
from tests.audit.history import make_ledger
from tests.audit.tamper import set_ip
from tests.support.chain import raw_rows
from tests.support.events import T0


@dataclass
class Ledger:
    url: str
    sessions: list[str]
    events: int


async def _populate(url: str) -> Ledger:
    clock = ManualClock(T0)
    engine = make_engine(url)
    try:
        ledger = make_ledger(engine, clock, SessionPolicy())
        ids = []
        for i in range(5):
            view, token = await ledger.create_session(
                "alice",
                RequestContext(ip=f"10.0.0.{i + 1}", user_agent="Firefox", request_id=f"r{i}"),
            )
            ids.append(view.id)
            clock.advance(3600)
            await ledger.get_session(token, RequestContext(ip="192.0.2.10"))
        await ledger.revoke_session(
            "alice", ids[0], RequestContext(actor="admin:root"), reason=RevocationReason.TOKEN_REUSE
        )
        await ledger.create_session("bob", RequestContext(ip="10.0.1.1"))
        await record_digest(engine, clock)
        return Ledger(url, ids, len(await raw_rows(engine)))
    finally:
        await engine.dispose()


@pytest.fixture
def populated(engine_url: str) -> Ledger:
    return asyncio.run(_populate(engine_url))


def cli(ledger: Ledger, *args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "250"})
    return runner.invoke(app, [*args, "--database-url", ledger.url])


def test_user_history_as_json(populated: Ledger) -> None:
    result = cli(populated, "audit", "user", "alice", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == populated.events - 1  # all but bob's sign-in
    assert [r["position"] for r in rows] == sorted(r["position"] for r in rows)
    first = rows[0]
    assert (first["type"], first["ip"], first["userAgent"], first["requestId"]) == (
        "SessionCreated",
        "10.0.0.1",
        "Firefox",
        "r0",
    )
    revoked = [r for r in rows if r["type"] == "SessionRevoked"]
    assert [(r["reason"], r["actor"]) for r in revoked] == [("token_reuse", "admin:root")]


def test_session_history_as_csv(populated: Ledger) -> None:
    result = cli(populated, "audit", "session", populated.sessions[0], "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["type"] for r in rows] == ["SessionCreated", "SessionTouched", "SessionRevoked"]
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["ip"] == "192.0.2.10"


def test_table_format_is_a_rich_table(populated: Ledger) -> None:
    result = cli(populated, "audit", "session", populated.sessions[1])
    assert result.exit_code == 0, result.output
    assert "session" in result.stdout.splitlines()[1]  # the header
    assert populated.sessions[1] in result.stdout  # wide: ids in full
    assert "2 row(s)" in result.stderr


CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


async def _long_user_agents(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        ledger = make_ledger(engine, ManualClock(T0), SessionPolicy())
        ids = []
        for _ in range(3):
            view, _token = await ledger.create_session(
                "carol", RequestContext(ip="2001:db8::1234:5678", user_agent=CHROME_MAC * 3)
            )
            ids.append(view.id)
        return ids
    finally:
        await engine.dispose()


def test_tables_fit_80_columns_and_json_keeps_full_values(populated: Ledger) -> None:
    ids = asyncio.run(_long_user_agents(populated.url))
    narrow = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["audit", "user", "carol", "--database-url", populated.url]
    )
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    rows = [line for line in lines if "Created" in line]
    assert len(rows) == 3  # one line per event, not a user agent wrapped over many
    assert all("Chrome 120" in row and "Mozilla" not in row for row in rows)  # parsed, cut
    assert {row.split()[2] for row in rows} == {i[-8:] for i in ids}  # the random tails
    wide = CliRunner(env={"COLUMNS": "120"}).invoke(
        app, ["audit", "user", "carol", "--database-url", populated.url]
    )
    assert wide.stdout.count("Chrome 120 on Mac OS X") == 3
    assert all(len(line) <= 120 for line in wide.stdout.splitlines())
    as_json = cli(populated, "audit", "user", "carol", "-f", "json")
    assert [r["userAgent"] for r in json.loads(as_json.stdout)] == [CHROME_MAC * 3] * 3
    assert [r["sessionId"] for r in json.loads(as_json.stdout)] == ids


def test_pagination_with_limit_and_after(populated: Ledger) -> None:
    everything = json.loads(cli(populated, "audit", "user", "alice", "-f", "json").stdout)
    first = cli(populated, "audit", "user", "alice", "-f", "json", "--limit", "4")
    assert first.exit_code == 0
    page = json.loads(first.stdout)
    assert page == everything[:4]
    cursor = page[-1]["position"]
    assert f"--after {cursor}" in first.stderr
    rest = cli(populated, "audit", "user", "alice", "-f", "json", "--after", str(cursor))
    assert json.loads(rest.stdout) == everything[4:]
    assert "--after" not in rest.stderr


def test_ip_network_and_point_in_time(populated: Ledger) -> None:
    result = cli(populated, "audit", "ip", "10.0.0.0/24", "-f", "json")
    assert result.exit_code == 0, result.output
    assert [r["ip"] for r in json.loads(result.stdout)] == [f"10.0.0.{i}" for i in range(1, 6)]
    single = json.loads(cli(populated, "audit", "ip", "192.0.2.10", "-f", "json").stdout)
    assert {r["sessionId"] for r in single} == set(populated.sessions)
    # Two hours after T0 only the first two sign-ins existed; none had ended.
    at = "2026-01-01T14:00:00Z"
    active = json.loads(cli(populated, "audit", "active-at", at, "-f", "json").stdout)
    assert [a["sessionId"] for a in active] == populated.sessions[:3]
    later = cli(populated, "audit", "active-at", "2026-01-01T23:00:00+00:00", "--user", "alice")
    assert later.exit_code == 0
    assert populated.sessions[0] not in later.stdout  # revoked by then
    assert "4 row(s)" in later.stderr


def test_revocations_and_counts(populated: Ledger) -> None:
    result = cli(populated, "audit", "revocations", "--reason", "token_reuse", "-f", "json")
    assert [r["sessionId"] for r in json.loads(result.stdout)] == [populated.sessions[0]]
    none = cli(populated, "audit", "revocations", "--reason", "sign_out", "-f", "json")
    assert json.loads(none.stdout) == []
    counts = cli(populated, "audit", "counts", "-f", "csv", "--since", "2026-01-01")
    rows = list(csv.DictReader(io.StringIO(counts.stdout)))
    assert {r["type"]: int(r["count"]) for r in rows} == {
        "SessionCreated": 6,
        "SessionTouched": 5,
        "SessionRevoked": 1,
    }
    assert {r["day"] for r in rows} == {"2026-01-01"}


def test_unknown_user_is_an_empty_result(populated: Ledger) -> None:
    result = cli(populated, "audit", "user", "nobody", "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "user", "alice", "--since", "last tuesday"], "not a time"),
        (["audit", "active-at", "2026-13-01"], "not a time"),
        (["audit", "ip", "10.0.0.300/24"], "not an IP address or CIDR network"),
        (["audit", "ip", "10.0.0.0/33"], "not an IP address or CIDR network"),
        (["audit", "revocations", "--reason", "bored"], "unknown revocation reason"),
        (["audit", "counts", "--type", "SessionExploded"], "unknown event type"),
        (["audit", "user", "alice", "--since", "2026-02-01", "--until", "2026-01-01"], "after"),
        (["verify-ledger", "--expect", "12:nothex"], "POSITION:DIGEST"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    populated: Ledger, args: list[str], message: str
) -> None:
    result = cli(populated, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_verify_ledger_reports_intact_then_tampered(populated: Ledger) -> None:
    ok = cli(populated, "verify-ledger")
    assert ok.exit_code == 0, ok.output
    assert "ledger intact" in ok.stdout
    digest = cli(populated, "audit", "digest")
    assert digest.exit_code == 0
    token = digest.stdout.strip()
    assert cli(populated, "verify-ledger", "--expect", token).exit_code == 0

    async def tamper() -> int:
        engine = make_engine(populated.url)
        try:
            position = (await raw_rows(engine, populated.sessions[2]))[0]["position"]
            await set_ip(engine, position, "10.9.9.9")
            return int(position)
        finally:
            await engine.dispose()

    position = asyncio.run(tamper())
    bad = cli(populated, "verify-ledger")
    assert bad.exit_code == 1
    assert f"stream {populated.sessions[2]} version 1 (position {position})" in bad.stdout
    assert "TAMPERED" in bad.stdout
    report = json.loads(cli(populated, "verify-ledger", "--json").stdout)
    assert report["ok"] is False
    assert [(p["streamId"], p["position"]) for p in report["problems"]] == [
        (populated.sessions[2], position)
    ]


def test_nul_in_an_id_is_bad_input_not_a_crash(populated: Ledger) -> None:
    result = cli(populated, "audit", "user", "al\x00ice")
    assert result.exit_code == 2
    assert "without NUL" in result.stderr
