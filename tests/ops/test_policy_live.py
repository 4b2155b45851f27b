"""One policy per region, changed live: an operator's document lands in the region's policy
history, actor nodes put it on the region's board, and nodes and gates apply it within a second
(real NATS, a real node, a gate following the board the way proxies and ext_proc do)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from node_support import run_cli
from policies import policy_text

from safeguards.actors.node import Node
from safeguards.actors.settings import NodeSettings
from safeguards.adapters.bus.region import NatsBus
from safeguards.adapters.csp.bus_link import BusLink
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.operators import OperatorRegistry, add_operator
from safeguards.adapters.store import InMemoryEventStore
from safeguards.core.codec import encode_signal
from safeguards.core.events import PolicyChanged, PolicyProposed, ScoreRecorded, Signal
from safeguards.core.policy import default_policy, default_policy_text
from safeguards.core.subjects import inputs_subject

from bus_support import wait_until

P = 2


def candidate(tmp_path: Path, *, mode: str = "enforce") -> Path:
    path = tmp_path / f"{mode}.toml"
    path.write_text(policy_text(mode, off="weapons", version="live-"))
    return path


async def test_an_operators_policy_is_in_force_everywhere_within_a_second(
        nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = "t" + uuid.uuid4().hex[:8]
    store = InMemoryEventStore(region)
    for name in ("alice", "bob"):
        add_operator(region, name, "admin")
    node = Node(region=region, partitions=P, bus=NatsBus(nats_url, region), store=store,
                settings=NodeSettings(fetch_timeout_s=0.2, relay_poll_s=0.2),
                static_partitions=range(P), operators=OperatorRegistry(region))
    gate = Gate(default_policy())
    link = BusLink(nats_url)
    common = ["--region", region, "--nats", nats_url, "--partitions", str(P)]
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await tg.start(link.run)
        tg.start_soon(link.follow_policy, region, gate)
        # a document that does not validate is refused before anything is sent
        broken = tmp_path / "broken.toml"
        broken.write_text(default_policy_text().replace("threshold = 0.5", "x = 1", 1))
        assert await run_cli("ops", "policy", "apply", str(broken), *common,
                             "--operator", "alice", "--reason", "typo") == 2
        assert "categories.jailbreak.threshold: missing" in capsys.readouterr().err
        started = time.monotonic()
        assert await run_cli("ops", "policy", "apply", str(candidate(tmp_path)), *common,
                             "--operator", "alice", "--reason", "weapons head misfires") == 0
        await wait_until(lambda: gate.policy.version.startswith("live-"), 5)
        await wait_until(lambda: node.policy.version.startswith("live-"), 5)
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed  # the CLI's own start-up included
        assert "in force in region" in capsys.readouterr().out
        # the node decides by it: the switched-off category strikes nothing
        signal = Signal("s1", "acct-w", region, datetime.now(UTC), "c", ScoreRecorded(
            "r1", "prompt", "a" * 64, 10, "m", "1", (("weapons", 0.99),)))
        assert link.js is not None
        await link.js.publish(inputs_subject(region, P, "acct-w"), encode_signal(signal))
        with anyio.fail_after(5):
            while not await store.history("acct-w"):  # noqa: ASYNC110 - polling the store
                await anyio.sleep(0.05)
        assert [e.type for e in await store.history("acct-w")] == ["ScoreRecorded"]
        # the emergency stop reaches the gate the same way
        assert await run_cli("ops", "policy", "apply", str(candidate(tmp_path, mode="refuse")),
                             *common, "--operator", "bob", "--reason", "incident 12") == 0
        await wait_until(lambda: gate.policy.mode == "refuse", 5)
        assert await run_cli("ops", "policy", "show", *common) == 0
        assert "live-" in capsys.readouterr().out
        node.request_stop()
        tg.cancel_scope.cancel()
    history = await store.history(f"policy:{region}")
    assert [e.type for e in history] == ["PolicyProposed", "PolicyChanged"] * 2
    changed = [e.body for e in history if isinstance(e.body, PolicyChanged)]
    assert [c.operator for c in changed] == ["alice", "bob"]
    assert all(isinstance(e.body, PolicyProposed | PolicyChanged) for e in history)
