"""The timeline's caches read only what came after the last view, and agree with a fresh read
of the whole history after more events arrive (real PostgreSQL)."""

from __future__ import annotations

from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.ops.console import pages
from safeguards.ops.console.reads import FINE_EVENTS, MarkerCache, PlotCache, search_accounts

from store_events import make_request, unique_region

ACCOUNT = "acct:cached-1"


async def test_cached_timeline_figures_match_a_fresh_read_as_the_history_grows(
        fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    region = unique_region()
    async with PostgresEventStore(region, fresh_database_url) as store:
        plots, marked = PlotCache(), MarkerCache(pages.MARKER_TYPES, pages.MARKERS)
        version = 0
        for grow in (FINE_EVENTS + 3, 5, 2 * FINE_EVENTS + 1):  # intervals left half-filled
            await store.append(make_request(ACCOUNT, region, version, grow))
            version += grow
            cached = await plots.buckets(store.engine, ACCOUNT)
            assert cached == await PlotCache().buckets(store.engine, ACCOUNT)
            assert sum(cached.events) == version
            markers = await marked.events(store, ACCOUNT, version)
            fresh = await MarkerCache(pages.MARKER_TYPES, pages.MARKERS).events(
                store, ACCOUNT, version)
            assert [e.version for e in markers] == [e.version for e in fresh]
            assert [e.version for e in markers] == [v for v in range(1, version + 1)
                                                    if v % 5 in (0, 4)]
        await store.append(make_request("acct:cached-2", region, 0, 1))
        await store.append(make_request("acct:other", region, 0, 1))
        assert await search_accounts(store.engine, "acct:cach") == [ACCOUNT, "acct:cached-2"]
        assert await search_accounts(store.engine, "zzz") == []
