"""A region's console on loopback over a fresh database (and the session's NATS), with its
operators registered: alice and bob (admins), carol (analyst), vic (viewer)
(``tests/console/conftest.py`` makes it a fixture)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import httpx
from nats.aio.client import Client

from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded import free_port
from safeguards.adapters.operators import add_operator
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.core.policy import default_policy
from safeguards.core.state import AccountState
from safeguards.ops.console.app import ConsoleConfig, build_console
from safeguards.ops.console.auth import make_token

from store_events import unique_region

OPERATORS = (("alice", "admin"), ("bob", "admin"), ("carol", "analyst"), ("vic", "viewer"))


@dataclass
class RunningConsole:
    url: str
    region: str
    store: PostgresEventStore
    config: ConsoleConfig

    async def state_when(self, account: str, holds: Callable[[AccountState], bool],
                         timeout_s: float = 30.0) -> AccountState:
        """The account's stored state once ``holds`` is true of it (polled: the store has no
        events to wait on); TimeoutError after ``timeout_s``."""
        with anyio.fail_after(timeout_s):
            while True:
                state = await self.store.load(account)
                if holds(state):
                    return state
                await anyio.sleep(0.05)

    def token(self, operator: str, now: float | None = None) -> str:
        return make_token(self.region, operator, time.time() if now is None else now)

    @contextlib.asynccontextmanager
    async def client(self, operator: str | None) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client signed in as ``operator`` (None: anonymous)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0) as client:
            if operator is not None:
                login = await client.get("/login")
                assert login.status_code == 200
                pre = client.cookies.get("sg_console_pre")
                answer = await client.post("/login", data={"pre": pre,
                                                           "token": self.token(operator)})
                assert answer.status_code == 303, answer.text
            yield client


ConsoleEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningConsole]]


def console_starter(database_url: str, nats_url: str) -> ConsoleEnv:
    @contextlib.asynccontextmanager
    async def start(region: str | None = None, **config: object) -> AsyncIterator[
            RunningConsole]:
        name = region or unique_region()
        for operator, role in OPERATORS:
            add_operator(name, operator, role)
        await migrate(database_url)
        settings = ConsoleConfig(name, database_url, nats_url, 4)
        for key, value in config.items():
            setattr(settings, key, value)
        async with PostgresEventStore(name, database_url) as store, \
                serving(build_console(settings), "127.0.0.1", free_port()) as url:
            yield RunningConsole(url, name, store, settings)

    return start


@dataclass
class ConsoleStack:
    console: RunningConsole
    nc: Client  # the node's connection (publish signals with it)
    proxy: CspProxy
    proxy_url: str


@contextlib.asynccontextmanager
async def console_with_node_and_proxy(database_url: str, nats_url: str, region: str,
                                      partitions: int) -> AsyncIterator[ConsoleStack]:
    """The region's console, one real node and an inline proxy (over the scripted upstream)
    whose gate follows the node's commands: what the browser tests drive."""
    from node_support import running_node

    async with console_starter(database_url, nats_url)(region) as console, \
            running_node(nats_url, region, console.store, partitions) as (_levels, nc), \
            serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as upstream:
        proxy = CspProxy(ProxyConfig(region=region, upstream_url=upstream, nats_url=nats_url,
                                     partitions=partitions, feed_heartbeat_s=0.25,
                                     feed_cleanup_timeout_s=0.25,
                                     caller_auth="loopback"), default_policy())
        async with serving(proxy, "127.0.0.1", free_port()) as proxy_url:
            yield ConsoleStack(console, nc, proxy, proxy_url)
