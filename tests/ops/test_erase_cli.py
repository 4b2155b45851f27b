"""``safeguards ops erase``: an admin with a registered key erases an account (recorded in the
audit before it happens); anyone else is refused and nothing is destroyed."""

from __future__ import annotations

import pytest
from node_support import run_cli

from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.erasure import AccountErased
from safeguards.core.events import RequestObserved
from safeguards.core.ports import AppendRequest

from store_events import make_event, unique_region


async def test_only_a_registered_admin_erases(fresh_database_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    add_operator(region, "alice", "admin")
    add_operator(region, "carol", "analyst")
    body = RequestObserved("r1", "m", "proxy", 1, 1, 1, "ab" * 32, False, "allow", "org-z")
    async with PostgresEventStore(region, fresh_database_url) as store:
        await store.append(AppendRequest("acct-z", 0, (make_event("acct-z", region, 1,
                                                                  body=body),)))
        common = ("ops", "erase", "acct-z", "--region", region, "--database-url",
                  fresh_database_url)
        assert await run_cli(*common, "--operator", "carol") == 2  # an analyst
        assert await run_cli(*common, "--operator", "mallory") == 2  # nobody registered
        assert (await store.history("acct-z"))[0].body == body
        capsys.readouterr()
        assert await run_cli(*common, "--operator", "alice") == 0
        assert '"keys_destroyed": 1' in capsys.readouterr().out
        history = await store.history("acct-z")
        assert history[-1].body == AccountErased("alice", 1, 1)
        request = history[0].body
        assert isinstance(request, RequestObserved) and request.organization_id is None
        reads = await store.operator_reads(10)
        assert [(r[1], r[2], r[3]) for r in reads] == [("alice", "erase", "acct-z")]
        assert reads[0][4] is not None  # signed with alice's key
