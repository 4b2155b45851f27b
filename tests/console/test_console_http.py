"""The console over HTTP, against a real region store: who may sign in, what each role may do,
that every read is audited, and what the read pages show."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from safeguards.adapters.operators import OperatorRegistry, add_operator
from safeguards.adapters.store.event_retention import EventRetention, truncate_events
from safeguards.core.events import EnforcementChanged, EventBody, LinkedEpisode, RequestObserved
from safeguards.core.ports import AppendRequest
from safeguards.ops.console.auth import make_token

from console_support import ConsoleEnv, RunningConsole
from store_events import T0, make_event, make_request, unique_region

ACCOUNT = "acct:console-1"


async def _history(console: RunningConsole, events: int = 20) -> None:
    await console.store.append(make_request(ACCOUNT, console.region, 0, events))


async def _sign_in(console: RunningConsole, token: str, pre: str | None = None) -> tuple[int, str]:
    async with console.client(None) as client:
        await client.get("/login")
        answer = await client.post("/login", data={
            "pre": pre or client.cookies.get("sg_console_pre"), "token": token})
        return answer.status_code, answer.text


async def test_only_a_fresh_token_of_a_registered_operator_of_this_region_signs_in(
        console_env: ConsoleEnv) -> None:
    async with console_env() as console:
        elsewhere = unique_region()
        add_operator(elsewhere, "zed", "admin")  # an operator of another region only
        status, text = await _sign_in(console, make_token(elsewhere, "zed", time.time()))
        assert status == 403 and "no operator of region" in text
        # alice's key, but a token made for the other region's console
        add_operator(elsewhere, "alice", "admin")
        status, _ = await _sign_in(console, make_token(elsewhere, "alice", time.time()))
        assert status == 403
        status, text = await _sign_in(console, console.token("alice", time.time() - 3600))
        assert status == 403 and "expired" in text
        token = console.token("alice")
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert (await _sign_in(console, forged))[0] == 403
        assert (await _sign_in(console, token, pre="not-the-form-cookie"))[0] == 403
        assert (await _sign_in(console, token))[0] == 303
        status, text = await _sign_in(console, token)
        assert status == 403 and "used already" in text

        async with console.client(None) as anonymous:
            assert (await anonymous.get("/queue")).headers["location"] == "/login"
            anonymous.cookies.set(f"sg_console_{console.region}", "e30.bm90LWEtbWFj")
            assert (await anonymous.get("/queue")).status_code == 303


async def test_every_read_is_audited_and_signed(console_env: ConsoleEnv) -> None:
    async with console_env() as console:
        await _history(console)
        async with console.client("vic") as vic:
            found = await vic.get("/accounts", params={"q": "acct:con"})
            assert found.status_code == 200 and ACCOUNT in found.text
            page = await vic.get("/timeline", params={"account": ACCOUNT})
            assert page.status_code == 200
            assert 'id="level">L1<' in page.text and 'id="plot-data"' in page.text
            assert "ladder.l1" in page.text and "explain" in page.text
            explained = await vic.get("/explain", params={"account": ACCOUNT, "version": 20})
            assert explained.status_code == 200
            assert "rule         ladder.l1" in explained.text
            assert "strikes that counted" in explained.text
            state = await vic.get("/state", params={"account": ACCOUNT, "at": "7"})
            assert "version  " in state.text and re.search(r"version\s+7\b", state.text)
            assert (await vic.get("/explain", params={"account": ACCOUNT,
                                                      "version": 2})).status_code == 400
            assert (await vic.get("/timeline", params={"account": "a b"})).status_code == 400
            assert (await vic.get("/queue")).status_code == 200
            assert (await vic.get("/linked", params={"account": ACCOUNT})).status_code == 200
            health = await vic.get("/health")
            assert health.status_code == 200 and 'id="outbox-pending">0<' in health.text
        reads = await console.store.operator_reads(limit=50)
        registry = OperatorRegistry(console.region)
        seen = {(r[1], r[2], r[3]) for r in reads}
        for command, subject in (("console.search", "search:acct:con"),
                                 ("console.timeline", ACCOUNT), ("console.explain", ACCOUNT),
                                 ("console.state-at", ACCOUNT),
                                 ("console.queue", f"queue:{console.region}"),
                                 ("console.linked", ACCOUNT),
                                 ("console.health", f"region:{console.region}")):
            assert ("vic", command, subject) in seen
        assert {registry.read_status(console.region, r[1], r[2], r[3], r[4])
                for r in reads} == {"signed"}


async def test_actions_need_the_session_csrf_token_and_the_role(
        console_env: ConsoleEnv) -> None:
    async with console_env() as console:
        await _history(console, 5)
        decide = {"account": ACCOUNT, "action": "decide", "level": "4", "reason": "case 1"}
        async with console.client("carol") as carol:
            assert (await carol.post("/action", data=decide)).status_code == 403  # no token
            page = await carol.get("/timeline", params={"account": ACCOUNT})
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            refused = await carol.post("/action", data={**decide, "csrf": csrf.group(1)})
            assert refused.status_code == 403 and "analyst" in refused.text  # L4 is admins'
            bad = await carol.post("/action", data={**decide, "level": "9",
                                                     "csrf": csrf.group(1)})
            assert bad.status_code == 400
        async with console.client("vic") as vic:
            page = await vic.get("/timeline", params={"account": ACCOUNT})
            assert "Act on this account" not in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            note = {"account": ACCOUNT, "action": "note", "reason": "x", "csrf": csrf.group(1)}
            assert (await vic.post("/action", data=note)).status_code == 403
        async with console.client(None) as anonymous:
            metrics = (await anonymous.get("/metrics")).text
        assert 'safeguards_console_requests_total{route="/action",status="403"}' in metrics
        assert 'safeguards_console_sign_ins_total{outcome="ok"} 2.0' in metrics


async def test_the_health_page_counts_fail_open_and_closed_requests_from_the_store(
        console_env: ConsoleEnv) -> None:
    """The durable marks the gate writes into requests' signals, over the last hour and day,
    by mode and cause (a restarted adapter's counters would have forgotten them)."""
    async with console_env() as console:
        now = datetime.now(UTC)
        plan = [(timedelta(minutes=10), "open:screen_classifier_timeout"),
                (timedelta(minutes=20), "open:screen_classifier_timeout"),
                (timedelta(minutes=30), None),  # decided normally: not counted
                (timedelta(hours=5), "closed:stale_cache"),
                (timedelta(hours=5, minutes=1), "open:screen_classifier_timeout"),
                (timedelta(days=2), "closed:stale_cache")]  # older than a day
        events = [make_event("acct:fallbacks", console.region, version, at=now - ago,
                             body=RequestObserved(
                                 request_id=f"req-{version}", model="m", surface="proxy",
                                 input_tokens=1, output_tokens=1, prompt_chars=1,
                                 prompt_sha256="0" * 64, streamed=False, action="allow",
                                 fallback=fallback))
                  for version, (ago, fallback) in enumerate(sorted(plan, reverse=True), 1)]
        await console.store.append(AppendRequest("acct:fallbacks", 0, tuple(events)))
        async with console.client("vic") as vic:
            page = (await vic.get("/health")).text
    counts = dict(re.findall(r'id="fallback-([a-z_-]+)">(\d+)<', page))
    assert counts == {"open-screen_classifier_timeout-hour": "2",
                      "open-screen_classifier_timeout-day": "3",
                      "closed-stale_cache-hour": "0", "closed-stale_cache-day": "1"}
    assert "From the region's events" in page and "in-process counters" in page


async def test_an_organisations_timeline_lists_its_linked_enforcement_episodes(
        console_env: ConsoleEnv) -> None:
    """An aggregate's episodes of enforcement reaching its members, opened and closed, are
    among the timeline's decisions, with the level, the trigger and how many members were told."""
    org = "org:episodes"
    bodies: list[EventBody] = [
        EnforcementChanged(level=2, previous_level=0, expires_at=None, reason="over threshold",
                           rule_id="escalate.points", risk_total=2.0, caused_by_version=0),
        LinkedEpisode("opened", trigger_level=2, level=2, reach=256, caused_by_version=1),
        EnforcementChanged(level=0, previous_level=2, expires_at=None, reason="forgiven",
                           rule_id="decay", risk_total=0.0, caused_by_version=2),
        LinkedEpisode("closed", trigger_level=2, level=0, reach=0, caused_by_version=3)]
    async with console_env() as console:
        await console.store.append(AppendRequest(org, 0, tuple(
            make_event(org, console.region, v, body=b) for v, b in enumerate(bodies, 1))))
        async with console.client("vic") as vic:
            page = await vic.get("/timeline", params={"account": org})
    assert page.status_code == 200
    markers = page.text.split('<table id="markers">', 1)[1].split("</table>", 1)[0]
    rows = [r for r in markers.split("<tr>") if "LinkedEpisode" in r]
    assert len(rows) == 2
    assert ("<td>L0</td>" in rows[0] and "linked enforcement closed at L0 (trigger L2), its "
            "members no longer told (from v3)" in rows[0])
    assert ("<td>L2</td>" in rows[1] and "linked enforcement opened at L2 (trigger L2), its "
            "newest 256 member(s) told (from v1)" in rows[1])


async def test_a_truncated_timeline_says_what_retention_removed_instead_of_an_older_page(
        console_env: ConsoleEnv) -> None:
    """Where retention removed every version before the first kept one, the timeline links no
    empty older page: it says which versions went, when, and its retention base's level and risk
    (and so does an older page asked for from a link made before the truncation)."""
    removed_on = T0 + timedelta(days=31)
    async with console_env() as console:
        await _history(console)
        assert (await truncate_events(console.store, EventRetention(30 * 86400), removed_on)
                )["events"] == 19  # all but the newest
        base = await console.store.state_at(ACCOUNT, version=19)
        async with console.client("vic") as vic:
            page = await vic.get("/timeline", params={"account": ACCOUNT})
            stale = await vic.get("/events", params={"account": ACCOUNT, "before": "12"})
            kept = await vic.get("/events", params={"account": ACCOUNT, "before": "20"})
    assert page.status_code == stale.status_code == kept.status_code == 200
    assert base.level == 1 and [r.category for r in base.risk] == ["cyber"]
    said = (f"history before v20 was removed by retention on {removed_on.date().isoformat()} "
            f"(v1..v19); retention base at v19: L1, risk cyber {base.risk[0].total:.3f}")
    events = page.text.split('<table id="events">', 1)[1].split("</table>", 1)[0]
    assert said in events and "older events" not in page.text
    assert [v for v in re.findall(r"<tr><td>(\d+)</td>", events)] == ["20"]
    for fragment in (stale.text, kept.text):
        assert said in fragment and "older events" not in fragment
    assert "<tr><td>" not in stale.text and "<tr><td>20</td>" in kept.text
