"""The demo page in a real browser (Debian's chromium via Playwright): sign
up, sign in from a second browser (after a wrong password, which the first
is told of), see both sessions with their devices and short ids, revoke the
other one, watch the second browser told why it lost its session, and an
administrator's chart. Each state is screenshotted into
``artifacts/`` (e2e-*.png)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from playwright.async_api import Browser, Page, Response, async_playwright, expect

from tests.e2e.conftest import CHROMIUM_ARGS, ROOT

DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
EMAIL = "ada@example.com"
ADMIN = "root@example.com"
PASSWORD = "correct horse battery"
ARTIFACTS = ROOT / "artifacts"


async def sign_in(page: Page, email: str = EMAIL) -> None:
    form = page.locator("#signin-form")
    await form.locator("[name=email]").fill(email)
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#signed-in")).to_be_visible()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"e2e-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page, not a blank


def failures(page: Page) -> list[str]:
    """Every response of the page that failed (a missing favicon was one)."""
    failed: list[str] = []

    def check(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", check)
    return failed


async def test_two_browsers_a_revocation_and_the_words_for_it(
    server: str, server_database: str, chromium: Path
) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            laptop = await (await browser.new_context(user_agent=DESKTOP)).new_page()
            phone = await (await browser.new_context(user_agent=PHONE)).new_page()
            failed = failures(laptop)
            # The page runs under a strict Content-Security-Policy: nothing it
            # needs may be blocked (the browser reports a violation as an error).
            problems: list[str] = []
            for page in (laptop, phone):
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e: problems.append(str(e)))

            await laptop.goto(server)
            signup = laptop.locator("#signup-form")
            await signup.locator("[name=name]").fill("Ada")
            await signup.locator("[name=email]").fill(EMAIL)
            await signup.locator("[name=password]").fill(PASSWORD)
            await signup.locator("button[type=submit]").click()
            await expect(laptop.locator("#signed-in")).to_be_visible()
            await expect(laptop.locator("#user-email")).to_have_text(EMAIL)
            # Alone: nothing to revoke but this device.
            await expect(laptop.locator("#revoke-others")).to_be_disabled()

            await phone.goto(server)
            # A wrong password first: the laptop is told of it.
            form = phone.locator("#signin-form")
            await form.locator("[name=email]").fill(EMAIL)
            await form.locator("[name=password]").fill("not the password at all")
            await form.locator("button[type=submit]").click()
            await expect(phone.locator("#message")).to_contain_text("invalid email or password")
            await sign_in(phone)

            await laptop.reload()
            rows = laptop.locator("#sessions tbody tr")
            await expect(rows).to_have_count(2)
            await expect(laptop.locator("#revoke-others")).to_be_enabled()
            current = laptop.locator("#sessions tbody tr.current")
            await expect(current).to_have_count(1)
            await expect(current.locator("td").first).to_contain_text("Chrome 124 on Linux")
            other = laptop.locator("#sessions tbody tr:not(.current)")
            await expect(other.locator("td").first).to_contain_text("Safari 17 on iOS")
            # One short id everywhere: the random tail of the UUIDv7.
            phone_id = await other.get_attribute("data-session-id")
            assert phone_id is not None
            await expect(other.locator("td.session-id")).to_have_text(phone_id[-8:])
            history = laptop.locator("#activity li.activity-event")
            await expect(history.first).to_contain_text("signed in")
            await expect(history.first).to_contain_text(f"session {phone_id[-8:]}")
            await expect(laptop.locator("#history")).to_have_count(0)  # one view of history
            # The failed sign-in: summed up by network above the history, and in it.
            await expect(laptop.locator("#activity .failed-sign-ins")).to_contain_text(
                "1 failed sign-in from 127.0.0.0/24 on this account (last "
            )
            failed_sign_in = history.filter(has_text="failed sign-in: wrong password")
            await expect(failed_sign_in).to_have_count(1)
            await expect(failed_sign_in).to_contain_text("Safari 17 on iOS · 127.0.0.1")
            await expect(failed_sign_in).not_to_contain_text("(session ")

            await other.locator("button.revoke").click()
            await expect(rows).to_have_count(1)
            await expect(laptop.locator("#revoke-others")).to_be_disabled()
            revoked = history.filter(has_text="revoked from another device")
            await expect(revoked).to_have_count(1)
            await expect(revoked).to_contain_text("by you")
            await expect(revoked).to_contain_text(f"session {phone_id[-8:]}")
            await expect(laptop.locator("#activity")).not_to_contain_text("user:")
            await screenshot(laptop, "signed-in")

            # The phone's next request (its cookie cache included) finds no
            # session, and the page says why.
            await phone.reload()
            await expect(phone.locator("#signed-out")).to_be_visible()
            await expect(phone.locator("#signed-in")).to_be_hidden()
            await expect(phone.locator("#message")).to_have_text(
                "This session was ended from another device."
            )
            await screenshot(phone, "ended-elsewhere")
            await phone.reload()  # said once: the cookies are gone now
            await expect(phone.locator("#message")).to_be_hidden()

            assert failed == []  # the favicon included
            favicon = await laptop.request.get(f"{server}/favicon.ico")
            assert favicon.status == 200
            assert favicon.headers["content-type"].startswith("image/svg+xml")
            await admin_chart(browser, server, server_database)
            csp = [p for p in problems if "Content Security Policy" in p]
            assert csp == [], csp
        finally:
            await browser.close()


def _create_admin(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "session-ledger"),
            "users",
            "create",
            ADMIN,
            "--password",
            PASSWORD,
            "--role",
            "admin",
            "--database-url",
            database_url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def admin_chart(browser: Browser, server: str, database_url: str) -> None:
    """An administrator sees the per-day chart with axes, dates and a scale."""
    created = await asyncio.to_thread(_create_admin, database_url)
    assert created.returncode == 0, created.stderr
    context = await browser.new_context(user_agent=DESKTOP)
    page = await context.new_page()
    await page.goto(server)
    await sign_in(page, ADMIN)
    chart = page.locator("svg.activity-chart")
    await expect(chart).to_be_visible()
    ticks = [await t.text_content() for t in await chart.locator("text.tick").all()]
    assert "0" in ticks  # the scale starts at zero ...
    assert any(t and t[0].isalpha() for t in ticks)  # ... and the days have dates ("Jan 3")
    assert await chart.locator("line.axis").count() >= 2
    await expect(chart.locator("text.axis-title")).to_have_text("events per day (UTC)")
    await screenshot(page, "admin-chart")
