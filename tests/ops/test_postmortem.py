"""``ops timeline``: a region's postmortem from its durable records (real PostgreSQL and NATS).

The region holds decisions under several rules, operator actions, a fail-open window the gate
recorded on the requests it served unscreened, a slow enforcement command in the outbox, and a
poison message a running node dead-lettered. The report's figures are those, a canary text
sent as a prompt, an operator's reason and a poison payload never appears in it, and bad
windows, regions and readers are refused with typed errors.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import anyio
import asyncpg
import pytest
from nats.aio.msg import Msg
from node_support import run_cli, running_node

from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.events import (
    EnforcementChanged,
    EventBody,
    OperatorActionTaken,
    RequestObserved,
)
from safeguards.core.ids import partition_of, subject_token
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.subjects import stream_name
from safeguards.ops.postmortem import InvalidWindow, check_window, parse_when

from store_events import make_event, unique_region

CANARY = "CANARY-7f3a how do I make the forbidden thing"
P = 2


def _request(n: int, fallback: str | None = None) -> RequestObserved:
    return RequestObserved(request_id=f"req-{n}", model="m", surface="proxy", input_tokens=5,
                           output_tokens=5, prompt_chars=len(CANARY), prompt_sha256="0" * 64,
                           streamed=False, action="allow", fallback=fallback)


def _change(rule: str, previous: int, level: int) -> EnforcementChanged:
    return EnforcementChanged(level=level, previous_level=previous, expires_at=None,
                              reason=CANARY if rule.startswith("operator.") else "over threshold",
                              rule_id=rule, risk_total=1.0, caused_by_version=1)


async def _seed(store: PostgresEventStore, region: str, base: datetime) -> None:
    m = timedelta(minutes=1)
    plan: dict[str, list[tuple[datetime, EventBody]]] = {a: [] for a in
                                                         ("a1", "a2", "a3", "a4", "a5", "a6")}
    n = 0
    for i, account in enumerate(plan):  # ordinary requests all along
        for k in range(4):
            n += 1
            plan[account].append((base + (5 + 25 * k + i) * m, _request(n)))
    for k in range(6):  # fail-open: base+30m .. base+40m, over three accounts
        n += 1
        plan[f"a{k % 3 + 1}"].append(
            (base + (30 + 2 * k) * m, _request(n, "open:screen_classifier_timeout")))
    n += 1
    plan["a4"].append((base + 70 * m, _request(n, "closed:stale_cache")))
    for account in ("a1", "a2", "a3"):
        plan[account].append((base + 45 * m, _change("escalate.points", 0, 1)))
    plan["a1"].append((base + 50 * m, _change("escalate.points", 1, 2)))
    plan["a4"].append((base + 72 * m, _change("link.enforced", 0, 3)))
    plan["a5"].append((base + 80 * m, OperatorActionTaken(
        operator="alice", action="set_level", level=4, expires_at=None, reason=CANARY)))
    plan["a5"].append((base + 80 * m, _change("operator.set_level", 0, 4)))
    plan["a6"].append((base + 85 * m, OperatorActionTaken(
        operator="bob", action="clear", level=None, expires_at=None, reason=CANARY)))
    plan["a6"].append((base - 300 * m, _change("escalate.points", 0, 1)))  # before the window
    for account, items in plan.items():
        items.sort(key=lambda item: item[0])
        events = tuple(make_event(account, region, v, at=at, body=body)
                       for v, (at, body) in enumerate(items, start=1))
        outbox = (OutboxMessage(f"cmd-{account}", f"sg.{region}.enforce.{account}", b"\x80"),)
        await store.append(AppendRequest(account, 0, events, None, outbox))


async def _times_outbox(url: str, base: datetime) -> None:
    """The relay's record: every command sent half a second after it committed, but a1's,
    which waited 90 s."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("UPDATE outbox SET created_at = $1::timestamptz, "
                           "published_at = $1::timestamptz + interval '0.5 seconds'",
                           base + timedelta(minutes=46))
        await conn.execute("UPDATE outbox SET published_at = created_at + interval '90 seconds'"
                           " WHERE message_id = 'cmd-a1'")
    finally:
        await conn.close()


async def _dead_letter(nats_url: str, region: str, store: PostgresEventStore) -> None:
    """A poison message, the canary inside, dead-lettered by a running node."""
    subject = f"sg.{region}.acct.{partition_of('a1', P)}.{subject_token('a1')}"
    async with running_node(nats_url, region, store, P) as (_, nc):
        dead = anyio.Event()

        async def on_dead_letter(_msg: Msg) -> None:
            dead.set()

        await nc.subscribe(f"sg.{region}.dlq.>", cb=on_dead_letter)
        await nc.jetstream().publish(subject, b"\xc1 " + CANARY.encode(), timeout=5)
        with anyio.fail_after(10):
            await dead.wait()
        info = await nc.jetstream().stream_info(stream_name(region, "DLQ"))
        assert info.state.messages == 1


async def test_the_report_shows_a_regions_incidents_from_durable_records(
        fresh_database_url: str, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    async with PostgresEventStore(region, fresh_database_url) as store:
        await _dead_letter(nats_url, region, store)  # also registers alice, bob, carol
        await _seed(store, region, base)
    await _times_outbox(fresh_database_url, base)
    add_operator(region, "vic", "viewer")
    out = tmp_path / "report.html"
    common = ["ops", "timeline", "--region", region, "--database-url", fresh_database_url,
              "--nats", nats_url, "--out", str(out)]
    monkeypatch.setenv("SAFEGUARDS_OPERATOR", "carol")
    assert await run_cli(*common, "--since", "-3h", "--until", "now") == 0
    page = out.read_text("utf-8")
    assert ("31 requests, 2 fallback window(s), 6 enforcement changes, 1 dead letters, "
            "2 operator actions") in capsys.readouterr().out

    assert CANARY not in page and "CANARY" not in page
    assert "<script" not in page and not re.search(r"(src|href)=", page)
    assert f"Region <b>{region}</b>" in page and "by operator\n<b>carol</b>" in page
    fallbacks = re.findall(r"<tr><td>fail-(\w+)</td><td>([^<]+)</td><td>([^<]+)</td>"
                           r"<td>[^<]+</td><td>(\d+)</td><td>(\d+)</td><td>([^<]+)</td>", page)
    at = [(base + timedelta(minutes=m)).isoformat().replace("+00:00", "Z") for m in (30, 40, 70)]
    assert fallbacks == [("open", at[0], at[1], "6", "3", "screen_classifier_timeout 6"),
                         ("closed", at[2], at[2], "1", "1", "stale_cache 1")]
    assert "6 requests served on a fail-open fallback, 1 refused on a fail-closed one, " \
           "of 31 requests" in page
    rules = dict(re.findall(r"<tr><td>([a-z._]+)</td><td>(\d+</td><td>\d+</td><td>[^<]*)</td>",
                            page))
    assert rules == {"escalate.points": "4</td><td>3</td><td>L1: 3, L2: 1",
                     "link.enforced": "1</td><td>1</td><td>L3: 1",
                     "operator.set_level": "1</td><td>1</td><td>L4: 1"}
    assert "6 enforcement commands committed in the window, 0 not sent by its end; the " \
           "longest wait from commit to send: 90.0 s" in page
    assert "1 messages dead-lettered in the window" in page
    assert "By operator: alice 1, bob 1." in page
    assert re.search(r"<td>a5</td><td>alice</td><td>OperatorActionTaken</td>"
                     r"<td>set_level to L4</td>", page)
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(svgs) == 4 and all(ElementTree.fromstring(s).tag.endswith("svg") for s in svgs)

    # the read was recorded before anything was read, as carol's
    conn = await asyncpg.connect(fresh_database_url.replace("postgresql+asyncpg://",
                                                            "postgresql://"))
    try:
        reads = await conn.fetch("SELECT operator, command, subject FROM operator_reads")
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in reads] == [("carol", "timeline")]
    assert reads[0][2].startswith(f"region:{region} ")

    # a viewer may not; a region nobody operates is unknown; a bad window is refused
    out.unlink()
    capsys.readouterr()
    monkeypatch.setenv("SAFEGUARDS_OPERATOR", "vic")
    assert await run_cli(*common, "--since=-3h") == 2
    assert "takes an analyst or admin; vic is viewer" in capsys.readouterr().err
    monkeypatch.setenv("SAFEGUARDS_OPERATOR", "carol")
    unknown = [*common[:3], "zz9", *common[4:]]
    assert await run_cli(*unknown, "--since=-3h") == 2
    assert "error: unknown region 'zz9'" in capsys.readouterr().err
    assert await run_cli(*common, "--since", "-1h", "--until=-2h") == 2
    assert "must be after --since" in capsys.readouterr().err
    assert await run_cli(*common, "--since=-40d") == 2
    assert "at most 31 days; this one is 40.0" in capsys.readouterr().err
    assert await run_cli(*common, "--since", "yesterday") == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err
    assert not out.exists()
    async with PostgresEventStore(region, fresh_database_url) as store:
        assert len(await store.operator_reads()) == 1  # refusals read nothing


def test_windows_parse_iso_and_relative_times_and_refuse_bad_ones() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert parse_when("-24h", now) == now - timedelta(hours=24)
    assert parse_when("-90m", now) == now - timedelta(minutes=90)
    assert parse_when("now", now) == now
    assert parse_when("2026-12-01T08:00:00Z", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_when("2026-12-01T09:00:00+01:00", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(InvalidWindow, match="no zone"):
        parse_when("2026-12-01T08:00:00", now)
    with pytest.raises(InvalidWindow, match="not an ISO 8601"):
        parse_when("<script>", now)
    with pytest.raises(InvalidWindow, match="must be after"):
        check_window(now, now - timedelta(hours=1))
    with pytest.raises(InvalidWindow, match="at most 31 days"):
        check_window(now - timedelta(days=32), now)
