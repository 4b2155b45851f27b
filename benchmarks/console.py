"""Console page latency for an account with ~100k events, measured in headless Chromium and at
the server, against the same pages for a 100-event account in the same run (the baseline).

Builds the histories with the real pure core (signals through ``decide``) in a scratch database
(embedded PostgreSQL, or a scratch database on SAFEGUARDS_DATABASE_URL's server), serves the
console, signs in as a registered operator, then loads each page ``--runs`` times. Browser
figure: navigation start to the timeline's plot drawn (``#plot[data-ready]``: HTML, the
vendored uPlot and htmx, the plot's data and the tables), Chromium's own clock. Server figures:
one HTTP GET each (every one audited in the store, as in production); the big account's first
view (its whole history read once, the console's caches filled) is reported on its own.

    python benchmarks/console.py [--signals 100000] [--runs 30]

Last line: {"events", "browser_timeline_p50_ms", "browser_timeline_p95_ms",
"browser_small_timeline_p95_ms", "server_timeline_p50_ms", "server_timeline_p95_ms",
"server_small_timeline_p95_ms", "server_timeline_first_view_ms", "server_explain_p95_ms",
"server_older_events_p95_ms", "server_queue_p95_ms", "server_search_p95_ms",
"timeline_ratio_100k_vs_small", "runs"}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx

from safeguards.adapters.csp.serving import serving
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.scratch import scratch_database
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.decide import decide
from safeguards.core.events import EnforcementChanged, Event, RequestObserved, ScoreRecorded, Signal
from safeguards.core.policy import default_policy
from safeguards.core.ports import AppendRequest
from safeguards.core.state import fold, initial_state
from safeguards.ops.console.app import ConsoleConfig, build_console
from safeguards.ops.console.auth import make_token

T0 = datetime(2026, 10, 1, tzinfo=UTC)
BIG, SMALL = "acct:bench-big", "acct:bench-small"


def history(account: str, signals: int) -> list[Event]:
    """Requests and scores at a steady pace; now and then a run of high jailbreak scores, so
    the account strikes, escalates and has decisions to explain."""
    policy = default_policy()
    state = initial_state(account, "eu")
    events: list[Event] = []
    at = T0
    for i in range(signals):
        at += timedelta(seconds=30)
        if i % 2 == 0:
            obs: RequestObserved | ScoreRecorded = RequestObserved(
                f"{account}-r{i}", "model-x", "proxy", 40, 300, 160, f"{i:064x}", False, "allow")
        else:
            hot = (i // 2) % 5000 < 6
            obs = ScoreRecorded(f"{account}-r{i - 1}", "prompt", f"{i:064x}", 160, "default",
                                "1", (("jailbreak", 0.97 if hot else 0.05), ("cyber", 0.02)))
        new = decide(state, Signal(f"{account}-s{i}", account, "eu", at, "c", obs), policy, at)
        state = fold(state, new)
        events += new
    return events


async def store_history(store: PostgresEventStore, events: list[Event]) -> None:
    for start in range(0, len(events), 2000):
        chunk = tuple(events[start:start + 2000])
        await store.append(AppendRequest(chunk[0].account_id, start, chunk))


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_get(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> float:
    t = time.perf_counter()
    answer = await client.get(path, params=params)
    elapsed = (time.perf_counter() - t) * 1000
    answer.raise_for_status()
    return elapsed


async def browser_runs(url: str, token: str, accounts: list[str], runs: int
                       ) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    out: dict[str, list[float]] = {a: [] for a in accounts}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1300, "height": 900})
        await page.goto(f"{url}/login?token={token}")
        await page.click("#sign-in")
        for account in accounts:  # warm: the browser's cache and code cache, the server's plans
            await page.goto(f"{url}/timeline?account={account}")
            await page.wait_for_selector("#plot[data-ready='1']")
        for _ in range(runs):
            for account in accounts:
                await page.goto(f"{url}/timeline?account={account}")
                plot = await page.wait_for_selector("#plot[data-ready='1']")
                assert plot is not None
                out[account].append(float(await plot.get_attribute("data-ready-ms") or "nan"))
        await browser.close()
    return out


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    await migrate(url)
    t = time.perf_counter()
    big, small = history(BIG, args.signals), history(SMALL, 50)
    async with PostgresEventStore("eu", url) as store:
        await store_history(store, big)
        await store_history(store, small)
    print(f"stored {len(big):,} + {len(small)} events in {time.perf_counter() - t:.1f} s",
          flush=True)
    decision = max(e.version for e in big if isinstance(e.body, EnforcementChanged))
    add_operator("eu", "bench", "viewer")
    server: dict[str, list[float]] = {k: [] for k in (
        "timeline", "small", "explain", "older", "queue", "search")}
    async with serving(build_console(ConsoleConfig("eu", url)), "127.0.0.1",
                       free_port()) as console:
        async with httpx.AsyncClient(base_url=console, timeout=30.0) as client:
            await client.get("/login")
            await client.post("/login", data={"pre": client.cookies.get("sg_console_pre"),
                                              "token": make_token("eu", "bench", time.time())})
            cases = {"timeline": ("/timeline", {"account": BIG}),
                     "small": ("/timeline", {"account": SMALL}),
                     "explain": ("/explain", {"account": BIG, "version": str(decision)}),
                     "older": ("/events", {"account": BIG, "before": str(len(big) // 2)}),
                     "queue": ("/queue", {}), "search": ("/accounts", {"q": "acct:bench"})}
            # the first view of the big account reads its whole history (the caches fill)
            first_view = await timed_get(client, "/timeline", {"account": BIG})
            for path, params in cases.values():  # warm
                await timed_get(client, path, params)
            for _ in range(args.runs):
                for name, (path, params) in cases.items():
                    server[name].append(await timed_get(client, path, params))
        browser = await browser_runs(console, make_token("eu", "bench", time.time()),
                                     [BIG, SMALL], args.runs)
    return {"events": len(big), "server": server, "browser": browser,
            "first_view": first_view}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signals", type=int, default=100_000,
                        help="signals decided for the big account (about one event each)")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    os.environ["SAFEGUARDS_STATE_DIR"] = tempfile.mkdtemp(prefix="sg-console-bench-")
    with scratch_database() as url:
        result = anyio.run(run, url, args)
    server, browser = result["server"], result["browser"]
    for name, values in server.items():
        print(f"server {name:9s} p50 {statistics.median(values):7.1f} ms  "
              f"p95 {p(values, 0.95):7.1f} ms")
    for account, values in browser.items():
        print(f"browser {account:16s} p50 {statistics.median(values):7.1f} ms  "
              f"p95 {p(values, 0.95):7.1f} ms")
    shutil.rmtree(os.environ["SAFEGUARDS_STATE_DIR"], ignore_errors=True)
    print(json.dumps({
        "events": result["events"],
        "browser_timeline_p50_ms": round(statistics.median(browser[BIG]), 1),
        "browser_timeline_p95_ms": round(p(browser[BIG], 0.95), 1),
        "browser_small_timeline_p95_ms": round(p(browser[SMALL], 0.95), 1),
        "server_timeline_p50_ms": round(statistics.median(server["timeline"]), 1),
        "server_timeline_p95_ms": round(p(server["timeline"], 0.95), 1),
        "server_small_timeline_p95_ms": round(p(server["small"], 0.95), 1),
        "server_timeline_first_view_ms": round(result["first_view"], 1),
        "server_explain_p95_ms": round(p(server["explain"], 0.95), 1),
        "server_older_events_p95_ms": round(p(server["older"], 0.95), 1),
        "server_queue_p95_ms": round(p(server["queue"], 0.95), 1),
        "server_search_p95_ms": round(p(server["search"], 0.95), 1),
        "timeline_ratio_100k_vs_small": round(p(server["timeline"], 0.95)
                                              / p(server["small"], 0.95), 2),
        "runs": len(server["timeline"])}))


if __name__ == "__main__":
    main()
