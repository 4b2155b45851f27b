"""The console in headless Chromium (Debian's ``chromium``, driven by Playwright), end to end:
scores push an account past the automatic limit on a real node, an operator signs in, finds the
account, reads its timeline and plot, claims and decides its review, and the decision reaches
the region's inline proxy (its gate holds L4 and refuses the account's next request)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest

from bus_support import publish_signals, wait_until
from console_support import console_with_node_and_proxy
from store_events import unique_region
from strategies import score_signal

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
P = 4
ACCOUNT = "acct:browser-1"

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (.ci/run installs it)")


async def test_an_operator_decides_a_review_in_the_browser_and_the_proxy_applies_it(
        fresh_database_url: str, nats_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    region = unique_region()
    now = datetime.now(UTC)
    signals = [score_signal(i, ACCOUNT, now + timedelta(seconds=i), (("jailbreak", 0.95),),
                            region=region) for i in range(8)]
    async with console_with_node_and_proxy(fresh_database_url, nats_url, region, P) as stack:
        console, nc, proxy, proxy_url = stack.console, stack.nc, stack.proxy, stack.proxy_url
        await publish_signals(nc.jetstream(), region, P, signals)

        async def reviewed() -> bool:
            return bool(await console.store.open_reviews())

        with anyio.fail_after(30):
            while True:
                if await reviewed():
                    break
                await anyio.sleep(0.1)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                               args=["--no-sandbox"])
            page = await browser.new_page()
            # sign in with a link as 'safeguards console-link' prints it
            await page.goto(f"{console.url}/login?token={console.token('alice')}")
            await page.click("#sign-in")
            await expect(page.locator("header .who")).to_contain_text("alice (admin)")

            await page.fill("#q", "acct:brow")
            await page.click("#search")
            await page.click(f"#results a:text-is('{ACCOUNT}')")
            await expect(page.locator("#level")).to_have_text("L3")
            await expect(page.locator("#plot canvas")).to_have_count(1)
            await expect(page.locator("#plot")).to_have_attribute("data-ready", "1")
            await expect(page.locator("#markers")).to_contain_text("ReviewRequested")
            assert await page.locator("#events tr").count() > 8

            await page.click("text=Review queue")
            row = page.locator(f"tr.review[data-account='{ACCOUNT}']")
            await row.locator("button.claim").click()
            await expect(row.locator("#sent")).to_contain_text("ReviewClaimed")
            for _ in range(100):  # the actor records the claim
                await page.reload()
                if "alice" in await row.inner_text():
                    break
                await anyio.sleep(0.1)
            await expect(row).to_contain_text("alice")
            await row.locator("select.level").select_option("4")
            await row.locator("input.reason").fill("case 4411: read the evidence")
            await row.locator("button.decide").click()
            await expect(row.locator("#sent")).to_contain_text("(L4)")

            # the decision reaches the proxy through the region's normal path
            await wait_until(lambda: proxy.gate.level_of(ACCOUNT, time.time()) == 4)
            async with httpx.AsyncClient() as client:
                refused = await client.post(
                    f"{proxy_url}/v1/messages",
                    headers={"x-csp-account-id": ACCOUNT},
                    json={"model": "claude-demo", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hello"}]})
            assert refused.status_code >= 400

            await page.goto(f"{console.url}/timeline?account={ACCOUNT}")
            await expect(page.locator("#level")).to_have_text("L4")
            await expect(page.locator("#markers")).to_contain_text("operator alice: "
                                                                   "case 4411")
            await page.goto(f"{console.url}/queue")
            await expect(page.locator("#empty")).to_be_visible()
            await browser.close()
