"""Loopback TCP proxies between a cluster's routes, to cut a server off and heal it again.

Each ordered pair of servers (``a`` dials ``b``) gets its own proxy; ``a``'s route to ``b`` names
the proxy's port. ``cut(i)`` closes every connection through a proxy with ``i`` at either end
and refuses new ones until ``heal(i)``: server ``i`` keeps running and keeps its clients, but
hears nothing from the rest of the cluster (a network partition, as the fault benchmark needs).
The proxies run on an event loop of their own, in a thread, so that a busy test loop does not
slow the cluster's replication down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketStream
from anyio.from_thread import BlockingPortal, start_blocking_portal

from safeguards.adapters.embedded.ports import free_port

HOST = "127.0.0.1"
CHUNK = 64 * 1024


@dataclass(slots=True)
class _Proxy:
    source: int
    target: int
    listen_port: int
    target_port: int
    open: bool = True
    connections: set[anyio.CancelScope] = field(default_factory=set)


class RoutePartitioner:
    """The proxies of one cluster (``route_ports[i]``: where server ``i`` listens for routes)."""

    def __init__(self, route_ports: list[int]) -> None:
        self._proxies: dict[tuple[int, int], _Proxy] = {}
        for a in range(len(route_ports)):
            for b in range(len(route_ports)):
                if a != b:
                    self._proxies[a, b] = _Proxy(a, b, free_port(), route_ports[b])
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._scope: anyio.CancelScope | None = None
        self.cuts = 0

    def port(self, source: int, target: int) -> int:
        """Where server ``source`` dials server ``target``."""
        return self._proxies[source, target].listen_port

    def start(self) -> RoutePartitioner:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        started = [self._portal.start_task_soon(self._serve, p) for p in self._proxies.values()]
        del started  # they run until close()
        return self

    async def _serve(self, proxy: _Proxy) -> None:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=proxy.listen_port)
        async with listener:
            await listener.serve(lambda client: self._forward(proxy, client))

    async def _forward(self, proxy: _Proxy, client: SocketStream) -> None:
        async with client:
            if not proxy.open:
                return
            try:
                upstream = await anyio.connect_tcp(HOST, proxy.target_port)
            except OSError:
                return  # the target is down; the dialling server retries
            with anyio.CancelScope() as scope:
                proxy.connections.add(scope)
                try:
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                        tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
                finally:
                    proxy.connections.discard(scope)

    @staticmethod
    async def _pump(src: SocketStream, dst: SocketStream, both: anyio.CancelScope) -> None:
        try:
            while True:
                await dst.send(await src.receive(CHUNK))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            both.cancel()  # one side went: close the other as a real network would

    def _set(self, server: int, open_: bool) -> None:
        for proxy in self._proxies.values():
            if server in (proxy.source, proxy.target):
                proxy.open = open_
                if not open_:
                    for scope in list(proxy.connections):
                        scope.cancel()

    def cut(self, server: int) -> None:
        """Partition ``server`` from the others (its routes close, new ones are refused)."""
        assert self._portal is not None, "start() first"
        self._portal.call(self._set, server, False)
        self.cuts += 1

    def heal(self, server: int) -> None:
        assert self._portal is not None, "start() first"
        self._portal.call(self._set, server, True)

    def close(self) -> None:
        if self._portal_cm is not None:
            assert self._portal is not None
            with contextlib.suppress(RuntimeError):  # already stopped
                self._portal.call(self._portal.stop, True)  # cancel the proxies' tasks
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = self._portal = None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._proxies)
