"""The two-person rule, appeals and the postmortem report in headless Chromium (Debian's
``chromium``, driven by Playwright), end to end on a real node, NATS, PostgreSQL and inline
proxy: a severe category takes an account to L4 on the node; one admin's lowering waits on
/approvals and changes nothing until a second admin decides it (a rejection drops it, an
approval carries it out and reaches the proxy's gate); an appeal is recorded and overturned on
/appeals; and ``safeguards ops timeline``'s report, opened in Chromium, lists those actions and
none of the prompt text the account sent through the proxy."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from node_support import run_cli

from safeguards.core.events import (
    AppealResolved,
    ApprovalGranted,
    EnforcementChanged,
    Event,
    RequestObserved,
)

from bus_support import publish_signals, wait_until
from console_support import RunningConsole, console_with_node_and_proxy
from store_events import unique_region
from strategies import score_signal

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
P = 4
ACCOUNT = "acct:browser-reviews-1"
CANARY = "CANARY-91d2 tell me how to build the forbidden thing"
SECRET_REASON = "case 5120: private note about the user"

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (.ci/run installs it)")


async def _recorded_requests(console: RunningConsole) -> list[Event]:
    """The account's RequestObserved events, once the gate's telemetry has landed one."""
    with anyio.fail_after(20):
        while True:
            found: list[Event] = await console.store.select_events(
                ACCOUNT, types=(RequestObserved.TYPE,))
            if found:
                return found
            await anyio.sleep(0.05)


async def _ask(proxy_url: str) -> int:
    """The account's request through the proxy, with the canary as its prompt: its status."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        answer = await client.post(
            f"{proxy_url}/v1/messages", headers={"x-csp-account-id": ACCOUNT},
            json={"model": "claude-demo", "max_tokens": 16,
                  "messages": [{"role": "user", "content": CANARY}]})
    return answer.status_code


async def _signed_in(browser: Any, console: RunningConsole, operator: str) -> Any:
    """A page of a fresh browser context, signed in as ``operator`` with a console link."""
    from playwright.async_api import expect

    page = await (await browser.new_context()).new_page()
    await page.goto(f"{console.url}/login?token={console.token(operator)}")
    await page.click("#sign-in")
    await expect(page.locator("header .who")).to_contain_text(f"{operator} (admin)")
    return page


async def _request_lowering(page: Any, console: RunningConsole, reason: str) -> None:
    """From the account's timeline: an override to L2, which waits for a second admin."""
    from playwright.async_api import expect

    await page.goto(f"{console.url}/timeline?account={ACCOUNT}")
    await expect(page.locator("#level")).to_have_text("L4")
    await page.select_option("#act-action", "override")
    await page.select_option("#act-level", "2")
    await page.fill("#act-reason", reason)
    await page.click("#act-go")
    await expect(page.locator("#acted #sent")).to_contain_text("Sent override")
    await expect(page.locator("#acted #sent")).to_contain_text("(L2)")


async def test_two_admins_decide_a_lowering_an_appeal_is_overturned_and_the_report_shows_it(
        fresh_database_url: str, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.async_api import async_playwright, expect

    region = unique_region()
    now = datetime.now(UTC)
    # three distinct requests scored severe in weapons: the node's own escalation to L4
    signals = [score_signal(i, ACCOUNT, now + timedelta(seconds=i), (("weapons", 0.97),),
                            region=region) for i in range(4)]
    async with console_with_node_and_proxy(fresh_database_url, nats_url, region, P) as stack:
        console, nc, proxy, proxy_url = stack.console, stack.nc, stack.proxy, stack.proxy_url
        await publish_signals(nc.jetstream(), region, P, signals)
        await console.state_when(ACCOUNT, lambda s: s.level == 4)
        changes = [e.body for e in await console.store.history(ACCOUNT)
                   if isinstance(e.body, EnforcementChanged)]
        assert changes[-1].rule_id == "escalate.severe_evidence"
        await wait_until(lambda: proxy.gate.level_of(ACCOUNT, time.time()) == 4)
        # the account sends the canary through the proxy: refused at L4, and recorded
        assert await _ask(proxy_url) >= 400
        requests = await _recorded_requests(console)
        assert [r.body.prompt_chars for r in requests
                if isinstance(r.body, RequestObserved)] == [len(CANARY)]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                               args=["--no-sandbox"])
            alice = await _signed_in(browser, console, "alice")
            bob = await _signed_in(browser, console, "bob")

            # alice asks to lower it: recorded as a request, nothing else changes
            await _request_lowering(alice, console, "case 5120: false positive?")
            pending = await console.state_when(ACCOUNT, lambda s: s.pending_approval is not None)
            assert pending.level == 4 and pending.pending_approval is not None
            assert pending.pending_approval.operator == "alice"
            assert pending.pending_approval.level == 2
            assert proxy.gate.level_of(ACCOUNT, time.time()) == 4
            await alice.goto(f"{console.url}/approvals")
            mine = alice.locator(f"tr.approval[data-account='{ACCOUNT}']")
            await expect(mine.locator(".proposed")).to_have_text("set L2")
            await expect(mine.locator(".proposer")).to_have_text("alice")
            await expect(mine.locator(".own")).to_have_text("awaiting another admin")
            await expect(mine.locator("button.approve")).to_have_count(0)
            await alice.goto(f"{console.url}/timeline?account={ACCOUNT}")
            await expect(alice.locator("#level")).to_have_text("L4")
            await expect(alice.locator("#markers")).to_contain_text("ApprovalRequested")

            # bob rejects it: the request is dropped and the level stays
            await bob.goto(f"{console.url}/approvals")
            row = bob.locator(f"tr.approval[data-account='{ACCOUNT}']")
            await expect(row.locator(".proposer")).to_have_text("alice")
            await row.locator("input.reason").fill("not enough: ask the CSP first")
            await row.locator("button.reject").click()
            await expect(row.locator("#sent")).to_contain_text("Sent reject")
            rejected = await console.state_when(ACCOUNT, lambda s: s.pending_approval is None)
            assert rejected.level == 4
            assert proxy.gate.level_of(ACCOUNT, time.time()) == 4
            await bob.reload()
            await expect(bob.locator("#empty")).to_be_visible()

            # alice asks again, bob approves: the level changes and reaches the proxy
            await _request_lowering(alice, console, SECRET_REASON)
            await console.state_when(ACCOUNT, lambda s: s.pending_approval is not None)
            await bob.reload()
            row = bob.locator(f"tr.approval[data-account='{ACCOUNT}']")
            await expect(row).to_contain_text(SECRET_REASON)
            await row.locator("input.reason").fill("read case 5120")
            await row.locator("button.approve").click()
            await expect(row.locator("#sent")).to_contain_text("Sent approve")
            await expect(row.locator("#sent")).to_contain_text("(L2)")
            lowered = await console.state_when(ACCOUNT, lambda s: s.level == 2)
            assert lowered.pending_approval is None
            await wait_until(lambda: proxy.gate.level_of(ACCOUNT, time.time()) == 2)
            history = await console.store.history(ACCOUNT)
            grants = [e.body for e in history if isinstance(e.body, ApprovalGranted)]
            assert [(g.approver, g.operator, g.level) for g in grants] == [
                ("bob", "alice", 2)]
            await bob.goto(f"{console.url}/timeline?account={ACCOUNT}")
            await expect(bob.locator("#level")).to_have_text("L2")
            await expect(bob.locator("#markers")).to_contain_text("ApprovalGranted")
            assert CANARY not in await bob.content()

            # alice records the user's appeal; bob overturns it to L0 on /appeals
            await alice.goto(f"{console.url}/appeals")
            await alice.fill("#appeal-account", ACCOUNT)
            await alice.fill("#appeal-id", "A-314")
            await alice.fill("#appeal-by", "csp-support")
            await alice.fill("#appeal-reason", "the user is a red-team vendor")
            await alice.click("#appeal-go")
            await expect(alice.locator("#filed #sent")).to_contain_text("AppealFiled")
            await console.state_when(ACCOUNT, lambda s: s.open_appeals == ("A-314",))
            await bob.goto(f"{console.url}/appeals")
            appeal = bob.locator("tr.appeal[data-appeal='A-314']")
            await expect(appeal).to_contain_text("red-team vendor")
            await expect(appeal.locator("select.level")).to_have_value("2")
            await appeal.locator("select.outcome").select_option("overturned")
            await appeal.locator("select.level").select_option("0")
            await appeal.locator("input.reason").fill("vendor contract on file")
            await appeal.locator("button.resolve").click()
            await expect(appeal.locator("#sent")).to_contain_text("AppealResolved")
            cleared = await console.state_when(
                ACCOUNT, lambda s: s.level == 0 and not s.open_appeals)
            assert cleared.pending_approval is None
            await wait_until(lambda: proxy.gate.level_of(ACCOUNT, time.time()) == 0)
            resolved = [e.body for e in await console.store.history(ACCOUNT)
                        if isinstance(e.body, AppealResolved)]
            assert [(r.operator, r.outcome, r.level_after) for r in resolved] == [
                ("bob", "overturned", 0)]
            await bob.reload()
            await expect(bob.locator("#empty")).to_be_visible()

            # the region's postmortem report, written by the CLI and opened in Chromium
            report = tmp_path / "postmortem.html"
            monkeypatch.setenv("SAFEGUARDS_OPERATOR", "carol")
            assert await run_cli("ops", "timeline", "--region", region, "--database-url",
                                 fresh_database_url, "--nats", nats_url, "--since",
                                 "-1h", "--out", str(report)) == 0
            page = await (await browser.new_context()).new_page()
            await page.goto(report.as_uri())
            await expect(page.locator("h1")).to_have_text(f"Postmortem: region {region}")
            rows = page.locator("tr", has_text=ACCOUNT)
            actions = [" | ".join(cells) for cells in
                       [await r.locator("td").all_inner_texts() for r in await rows.all()]]
            # (the report lists by time; an approval and its grant share theirs)
            assert sorted(a.split(" | ", 2)[2] for a in actions) == sorted([
                "alice | ApprovalRequested | asked set_level to L2",
                "bob | OperatorActionTaken | reject",
                "alice | ApprovalRequested | asked set_level to L2",
                "bob | OperatorActionTaken | approve",
                "bob | ApprovalGranted | approved alice's set_level to L2",
                "bob | AppealResolved | appeal overturned, L0"])
            assert actions[0].split(" | ", 2)[2].startswith("alice | ApprovalRequested")
            rules = page.locator("tr", has=page.locator("td:text-is('operator.set_level')"))
            await expect(rules).to_contain_text("L2: 1")
            await expect(page.locator("tr", has=page.locator(
                "td:text-is('escalate.severe_evidence')"))).to_contain_text("L4: 1")
            await expect(page.locator("body")).to_contain_text("By operator: alice 2, "
                                                               "bob 4.")
            await expect(page.locator("body")).to_contain_text(  # the canary's request
                "0 refused on a fail-closed one, of 1 requests")
            text = await page.content()
            assert CANARY not in text and "CANARY" not in text
            assert SECRET_REASON not in text
            await browser.close()
