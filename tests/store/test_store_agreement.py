"""Hypothesis drives the in-memory and the PostgreSQL store with the same operations and checks
that they agree after every step (the pattern of hypothesis' own database agreement test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from safeguards.adapters.store import InMemoryEventStore, PostgresEventStore, migrate
from safeguards.core import codec
from safeguards.core.errors import ConcurrencyConflict, ResidencyViolation
from safeguards.core.ports import AppendRequest, AppendResult
from safeguards.core.state import fold, initial_state

from store_events import T0, create_database, make_request

ACCOUNTS = ("a", "b", "c")
KEYS = (None, "k1", "k2", "k3")
SNAPSHOT_EVERY = 3

Outcome = AppendResult | tuple[str, int | None]


def _outcome(result: AppendResult | ConcurrencyConflict) -> Outcome:
    if isinstance(result, ConcurrencyConflict):
        return ("conflict", result.actual_version)
    return result


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    # The state machine is synchronous; both stores run on this portal's event loop.
    with start_blocking_portal() as p:
        yield p


requests = st.builds(
    lambda account, offset, count, key, outbox, tag: (account, offset, count, key, outbox, tag),
    st.sampled_from(ACCOUNTS), st.sampled_from((0, 0, 0, -1, 1)), st.integers(0, 3),
    st.sampled_from(KEYS), st.integers(0, 1), st.sampled_from(("", "x")),
)


def test_memory_and_postgres_stores_agree(postgres_server: Any, portal: BlockingPortal) -> None:
    url = portal.call(create_database, postgres_server.admin_url)
    portal.call(migrate, url)
    pg_store = PostgresEventStore("eu", url, snapshot_every=SNAPSHOT_EVERY)

    async def reset() -> None:
        async with pg_store.engine.begin() as conn:
            await conn.execute(sa.text(
                "TRUNCATE events, snapshots, inbox, outbox, feed_counter RESTART IDENTITY"))
        for account in ACCOUNTS:  # the history it appended to is gone
            pg_store.forget(account)

    async def snapshots_are_folds(account: str) -> None:
        async with pg_store.engine.connect() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT version, state FROM snapshots WHERE account_id = :a"),
                {"a": account})).all()
        history = await pg_store.history(account)
        for version, data in rows:
            assert codec.decode_state(bytes(data)) == fold(initial_state(account, "eu"),
                                                           history[:version])

    class StoresAgree(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            portal.call(reset)
            self.memory = InMemoryEventStore("eu", snapshot_every=SNAPSHOT_EVERY)
            self.pg = pg_store

        def _request(self, spec: tuple[str, int, int, str | None, int, str]) -> AppendRequest:
            account, offset, count, key, outbox, tag = spec
            current = self.memory._version(account)
            return make_request(account, "eu", max(0, current + offset), count, inbox_key=key,
                                outbox=outbox, tag=tag)

        def _both(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            def call(store: Any) -> Any:
                try:
                    return portal.call(lambda: getattr(store, name)(*args, **kwargs))
                except ConcurrencyConflict as conflict:
                    return ("conflict", conflict.actual_version)
            return call(self.memory), call(self.pg)

        @rule(spec=requests)
        def append(self, spec: tuple[str, int, int, str | None, int, str]) -> None:
            mem, pg = self._both("append", self._request(spec))
            assert mem == pg

        @rule(specs=st.lists(requests, min_size=1, max_size=4))
        def append_batch(self, specs: list[tuple[str, int, int, str | None, int, str]]) -> None:
            batch = [self._request(s) for s in specs]
            mem, pg = self._both("append_batch", batch)
            assert [_outcome(r) for r in mem] == [_outcome(r) for r in pg]

        @rule(account=st.sampled_from(ACCOUNTS))
        def foreign_event(self, account: str) -> None:
            request = make_request(account, "us", self.memory._version(account), 1)
            for store in (self.memory, self.pg):
                with pytest.raises(ResidencyViolation):
                    portal.call(store.append, request)

        @rule(limit=st.integers(1, 3), publish=st.booleans())
        def relay(self, limit: int, publish: bool) -> None:
            mem, pg = self._both("pending_outbox", limit)
            assert mem == pg
            if publish and mem:
                self._both("mark_published", [mem[0].outbox_id])

        @rule(account=st.sampled_from(ACCOUNTS), version=st.integers(0, 12),
              seconds=st.integers(0, 14))
        def past_states(self, account: str, version: int, seconds: int) -> None:
            mem, pg = self._both("state_at", account, version=version)
            assert mem == pg
            mem, pg = self._both("state_at", account, at=T0 + timedelta(seconds=seconds))
            assert mem == pg
            mem, pg = self._both("history", account, from_version=max(1, version - 3),
                                 since=T0 + timedelta(seconds=seconds))
            assert mem == pg

        @invariant()
        def agree(self) -> None:
            for account in ACCOUNTS:
                mem, pg = self._both("load", account)
                assert mem == pg
                mem, pg = self._both("history", account)
                assert mem == pg
            mem, pg = self._both("read_feed", 0, 1000)
            assert mem == pg
            mem, pg = self._both("read_feed", 2, 3)
            assert mem == pg
            mem, pg = self._both("account_ids")
            assert mem == pg
            for key in KEYS[1:]:
                mem, pg = self._both("inbox_contains", key)
                assert mem == pg
            for account in ACCOUNTS:
                mem, pg = self._both("snapshot_versions", account)
                assert mem == pg
                portal.call(snapshots_are_folds, account)

    try:
        run_state_machine_as_test(StoresAgree, settings=settings(
            max_examples=10, stateful_step_count=10, deadline=None,
            suppress_health_check=[HealthCheck.too_slow], database=None))
    finally:
        portal.call(pg_store.close)
