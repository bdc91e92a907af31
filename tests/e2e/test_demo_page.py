"""The demo page in a real browser (Debian's chromium via Playwright): sign
up, sign in from a second browser, see both sessions with their devices,
revoke the other one, and watch the second browser lose its session."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

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
PASSWORD = "correct horse battery"


async def sign_in(page: Page) -> None:
    form = page.locator("#signin-form")
    await form.locator("[name=email]").fill(EMAIL)
    await form.locator("[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#signed-in")).to_be_visible()


async def test_two_browsers_and_a_revocation(server: str, chromium: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            laptop = await (await browser.new_context(user_agent=DESKTOP)).new_page()
            phone = await (await browser.new_context(user_agent=PHONE)).new_page()
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

            await phone.goto(server)
            await sign_in(phone)

            await laptop.reload()
            rows = laptop.locator("#sessions tbody tr")
            await expect(rows).to_have_count(2)
            current = laptop.locator("#sessions tbody tr.current")
            await expect(current).to_have_count(1)
            await expect(current.locator("td").first).to_contain_text("Chrome 124 on Linux")
            other = laptop.locator("#sessions tbody tr:not(.current)")
            await expect(other.locator("td").first).to_contain_text("Safari 17 on iOS")
            await expect(laptop.locator("#history li").first).to_contain_text("created")

            await other.locator("button.revoke").click()
            await expect(rows).to_have_count(1)
            await expect(laptop.locator("#history li").first).to_contain_text("revoked")

            artifacts = ROOT / "artifacts"
            artifacts.mkdir(exist_ok=True)
            await laptop.screenshot(path=str(artifacts / "e2e-demo-sessions.png"), full_page=True)

            # The phone's next request (its cookie cache included) finds no session.
            await phone.reload()
            await expect(phone.locator("#signed-out")).to_be_visible()
            await expect(phone.locator("#signed-in")).to_be_hidden()
            csp = [p for p in problems if "Content Security Policy" in p]
            assert csp == [], csp
        finally:
            await browser.close()
