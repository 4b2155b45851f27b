"""The console's pending approvals and appeals over HTTP, on a real node, NATS and PostgreSQL:
a second admin's approval carries the action out and it reaches the store; nobody approves their
own request (403, recorded in the audit); a viewer sees no buttons and may not post them; every
action needs the session's CSRF token; appeals are recorded and decided with the CLI's signals."""

from __future__ import annotations

import re

import httpx
from node_support import running_node

from safeguards.core.events import AppealResolved, ApprovalGranted, EnforcementChanged

from console_support import ConsoleEnv

ACCOUNT = "acct:approvals-1"
P = 4


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def _post(client: httpx.AsyncClient, fields: dict[str, str]) -> httpx.Response:
    csrf = _csrf((await client.get("/approvals")).text)
    return await client.post("/action", data={**fields, "csrf": csrf})


async def test_a_second_admin_approves_a_suspension_and_nobody_approves_their_own(
        console_env: ConsoleEnv) -> None:
    async with console_env() as console, \
            running_node(console.config.nats_url or "", console.region, console.store, P):
        async with console.client("alice") as alice, console.client("bob") as bob, \
                console.client("vic") as vic:
            # alice asks for L5: the actor records a request for approval, nothing else
            asked = await _post(alice, {"account": ACCOUNT, "action": "override", "level": "5",
                                        "reason": "case 77: terminate"})
            assert asked.status_code == 200, asked.text
            state = await console.state_when(ACCOUNT, lambda s: s.pending_approval is not None)
            assert state.level == 0

            listed = (await alice.get("/approvals")).text
            row = listed.split('<tr class="approval"', 1)[1].split("</tr>", 1)[0]
            assert ACCOUNT in row and "set L5" in row and ">alice<" in row
            assert "case 77: terminate" in row
            assert "awaiting another admin" in row and 'class="approve"' not in row

            # her own approval is refused before anything is sent, and the attempt is kept
            approve = {"account": ACCOUNT, "action": "approve", "level": "5",
                       "reason": "me again"}
            own = await _post(alice, approve)
            assert own.status_code == 403 and "second admin" in own.text
            # a viewer sees the request but no button, and may not post one
            seen = (await vic.get("/approvals")).text
            assert ACCOUNT in seen and 'class="approve"' not in seen
            assert 'class="reject"' not in seen
            assert (await _post(vic, approve)).status_code == 403
            assert (await _post(vic, {**approve, "action": "reject"})).status_code == 403
            # without the session's CSRF token nothing is sent, for an admin too
            assert (await bob.post("/action", data=approve)).status_code == 403
            assert 'class="approve"' in (await bob.get("/approvals")).text
            wrong = await _post(bob, {**approve, "level": "4"})
            assert wrong.status_code == 400 and "targets L5" in wrong.text
            state = await console.store.load(ACCOUNT)
            assert state.level == 0 and state.pending_approval is not None

            # bob rejects it: the request is dropped, the level stays, approving it is too late
            rejected = await _post(bob, {**approve, "action": "reject", "reason": "no case"})
            assert rejected.status_code == 200
            await console.state_when(ACCOUNT, lambda s: s.pending_approval is None)
            late = await _post(bob, {**approve, "reason": "changed my mind"})
            assert late.status_code == 400 and "no action awaits approval" in late.text
            assert (await console.store.load(ACCOUNT)).level == 0
            # alice asks again, and bob approves
            assert (await _post(alice, {"account": ACCOUNT, "action": "override", "level": "5",
                                        "reason": "case 77: new evidence"})).status_code == 200
            await console.state_when(ACCOUNT, lambda s: s.pending_approval is not None)
            granted = await _post(bob, {**approve, "reason": "read case 77"})
            assert granted.status_code == 200 and "approve" in granted.text
            state = await console.state_when(ACCOUNT, lambda s: s.level == 5)
            assert state.pending_approval is None
            history = await console.store.history(ACCOUNT)
            grants = [e.body for e in history if isinstance(e.body, ApprovalGranted)]
            assert [(g.approver, g.operator, g.level) for g in grants] == [
                ("bob", "alice", 5)]
            change = [e.body for e in history if isinstance(e.body, EnforcementChanged)][-1]
            assert change.level == 5 and "approved by bob" in change.reason
            assert 'id="empty"' in (await bob.get("/approvals")).text

            # an appeal overturned by one admin lowers a terminated account only once a
            # second admin approves: the appeal closes, the lowering waits on this page
            assert (await _post(bob, {"account": ACCOUNT, "action": "appeal-file",
                                      "appeal_id": "A-9", "filed_by": "csp-support",
                                      "reason": "wrong account"})).status_code == 200
            await console.state_when(ACCOUNT, lambda s: s.open_appeals == ("A-9",))
            assert (await _post(bob, {"account": ACCOUNT, "action": "appeal-resolve",
                                      "appeal_id": "A-9", "outcome": "overturned",
                                      "level_after": "0", "reason": "wrong account"})
                    ).status_code == 200
            state = await console.state_when(ACCOUNT, lambda s: s.pending_approval is not None)
            assert state.level == 5 and state.open_appeals == ()
            row = (await alice.get("/approvals")).text.split('<tr class="approval"', 1)[1]
            assert "set L0" in row and ">bob<" in row and "appeal A-9 overturned" in row
            assert (await _post(alice, {**approve, "level": "0", "reason": "agreed"})
                    ).status_code == 200
            await console.state_when(ACCOUNT, lambda s: s.level == 0)
        async with console.client(None) as anonymous:
            metrics = (await anonymous.get("/metrics")).text
    assert 'safeguards_console_actions_total{action="approve",outcome="refused_own"} 1.0' \
        in metrics
    reads = await console.store.operator_reads(limit=100)
    refused = [r for r in reads if r[2] == "console.refused.own-approval"]
    assert [(r[1], r[3]) for r in refused] == [("alice", ACCOUNT)]
    assert ("vic", "console.approvals", f"approvals:{console.region}") in {
        (r[1], r[2], r[3]) for r in reads}


async def test_an_appeal_is_recorded_listed_and_decided_with_the_clis_signals(
        console_env: ConsoleEnv) -> None:
    account = "acct:appeals-1"
    async with console_env() as console, \
            running_node(console.config.nats_url or "", console.region, console.store, P), \
            console.client("carol") as carol, console.client("bob") as bob:
        # an analyst sets L2 and records the user's appeal against it
        assert (await _post(carol, {"account": account, "action": "override", "level": "2",
                                    "reason": "case 9"})).status_code == 200
        await console.state_when(account, lambda s: s.level == 2)
        filed = await _post(carol, {"account": account, "action": "appeal-file",
                                    "appeal_id": "A-17", "filed_by": "csp-support",
                                    "reason": "user says it was a test suite"})
        assert filed.status_code == 200 and "AppealFiled" in filed.text
        await console.state_when(account, lambda s: s.open_appeals == ("A-17",))

        page = (await carol.get("/appeals")).text
        row = page.split('<tr class="appeal"', 1)[1].split("</tr>", 1)[0]
        assert "A-17" in row and "csp-support" in row and "test suite" in row
        assert 'class="resolve"' not in row  # outcomes are admins'
        resolve = {"account": account, "action": "appeal-resolve", "appeal_id": "A-17",
                   "outcome": "overturned", "level_after": "0",
                   "reason": "false positive"}
        assert (await _post(carol, resolve)).status_code == 403
        assert 'class="resolve"' in (await bob.get("/appeals")).text
        assert (await bob.post("/action", data=resolve)).status_code == 403  # no CSRF
        assert (await _post(bob, resolve)).status_code == 200
        state = await console.state_when(account, lambda s: not s.open_appeals)
        assert state.level == 0
        resolved = [e.body for e in await console.store.history(account)
                    if isinstance(e.body, AppealResolved)]
        assert [(r.operator, r.outcome, r.level_after) for r in resolved] == [
            ("bob", "overturned", 0)]
        assert 'id="empty"' in (await bob.get("/appeals")).text

