"""Per-account turns at the screening classifier (``csp.screen_turns``): first the turns on their
own (the account's work at the classifier held open by an event, so every order is exact), then
through the proxy with the real classifier: a burst of one account is screened in turn, another
account is not queued behind it, and a wait past the policy's bound fails open, counted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

import anyio
from csp_testkit import Region, RunningProxy, action_for, eventually

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.screen_turns import QUEUE_FULL, QUEUE_WAIT, ScreenTurns
from safeguards.core.policy import Policy

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]

WAIT_S = 10.0  # long enough never to run out in the tests that are not about running out


async def _hold(turns: ScreenTurns, account: str, entered: anyio.Event, leave: anyio.Event,
                got: list[str], wait_s: float = WAIT_S, max_waiting: int = 32) -> None:
    async with turns.turn(account, wait_s, max_waiting) as missed:
        got.append(missed)
        entered.set()
        if not missed:
            await leave.wait()


async def _queued(turns: ScreenTurns, account: str, n: int) -> None:
    """Until at least ``n`` of the account's screenings wait for their turn."""
    await eventually(lambda: turns.waiting(account) >= n)


async def test_an_accounts_screenings_take_turns_in_order_and_others_never_wait() -> None:
    turns = ScreenTurns()
    order: list[int] = []
    leave = [anyio.Event() for _ in range(4)]
    entered = [anyio.Event() for _ in range(4)]

    async def one(i: int) -> None:
        async with turns.turn("acct-burst", WAIT_S, 32) as missed:
            assert missed == ""
            order.append(i)
            entered[i].set()
            await leave[i].wait()

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
            await _queued(turns, "acct-burst", i)  # i waiting behind the first
        # another account while the burst holds the turn and three wait: straight through
        other, done = anyio.Event(), anyio.Event()
        done.set()
        other_got: list[str] = []
        with anyio.fail_after(0.5):
            await _hold(turns, "acct-other", other, done, other_got, max_waiting=1)
        assert other_got == [""] and len(turns) == 1  # its entry already gone again
        for i in range(4):
            with anyio.fail_after(5):
                await entered[i].wait()
            assert order == list(range(i + 1))  # one at a time, in arrival order
            leave[i].set()
    assert len(turns) == 0 and turns.waiting("acct-burst") == 0


async def test_a_wait_past_the_bound_and_a_full_queue_fail_open_with_their_causes() -> None:
    turns = ScreenTurns()
    entered, leave = anyio.Event(), anyio.Event()
    got: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, turns, "acct-a", entered, leave, got)
        await entered.wait()
        # past the bound: given up, no turn, its place freed
        late: list[str] = []
        started = anyio.current_time()
        await _hold(turns, "acct-a", anyio.Event(), anyio.Event(), late, 0.05)
        assert late == [QUEUE_WAIT] and anyio.current_time() - started >= 0.05
        assert turns.waiting("acct-a") == 0
        # a cap of two waiting: the third is not queued at all
        waiting = [anyio.Event(), anyio.Event()]
        for e in waiting:
            tg.start_soon(_hold, turns, "acct-a", e, anyio.Event(), got, WAIT_S, 2)
        await _queued(turns, "acct-a", 2)
        full: list[str] = []
        with anyio.fail_after(0.5):
            await _hold(turns, "acct-a", anyio.Event(), anyio.Event(), full, WAIT_S, 2)
        assert full == [QUEUE_FULL] and turns.waiting("acct-a") == 2
        tg.cancel_scope.cancel()
    assert len(turns) == 0


async def test_a_cancelled_waiter_frees_its_place() -> None:
    turns = ScreenTurns()
    entered, leave = anyio.Event(), anyio.Event()
    got: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, turns, "acct-a", entered, leave, got)
        await entered.wait()
        async with anyio.create_task_group() as waiter:  # a client disconnects while waiting
            waiter.start_soon(_hold, turns, "acct-a", anyio.Event(), anyio.Event(), got,
                              WAIT_S, 1)
            await _queued(turns, "acct-a", 1)
            waiter.cancel_scope.cancel()
        assert turns.waiting("acct-a") == 0
        # the place is free: the next one queues (cap 1) and gets the turn after the holder
        after = anyio.Event()
        tg.start_soon(_hold, turns, "acct-a", after, anyio.Event(), got, WAIT_S, 1)
        await _queued(turns, "acct-a", 1)
        leave.set()
        with anyio.fail_after(5):
            await after.wait()
        tg.cancel_scope.cancel()
    assert got.count("") == 2 and QUEUE_FULL not in got and len(turns) == 0


def _screening_all(policy: Policy, queue_ms: float) -> Policy:
    """Every screened prompt goes to the contextual model (no first stage clearing it); an
    account's screenings wait at most ``queue_ms`` for their turn."""
    return replace(policy, gate=replace(policy.gate, screen_first_stage=False,
                                        screen_account_queue_ms=queue_ms))


async def test_a_burst_is_screened_in_turn_and_another_account_is_not_queued_behind_it(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    n = 12
    policy = _screening_all(test_policy, 60_000)
    async with proxy_env(policy=policy) as running_proxy, classifier_env():
        turns = running_proxy.proxy.admission.screen_turns
        # warm the model
        await action_for(running_proxy, "acct-warm", "What is a good bread recipe?")
        actions: list[str] = []
        other_done_while_burst_waits: list[bool] = []

        async def burst(i: int) -> None:
            actions.append(await action_for(running_proxy, "acct-burst",
                                      f"Question {i}: how do I bake bread with walnuts?"))

        async def other() -> None:
            await _queued(turns, "acct-burst", 4)
            actions.append(await action_for(running_proxy, "acct-other", "How do tides work?"))
            other_done_while_burst_waits.append(turns.waiting("acct-burst") > 0)

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(burst, i)
            tg.start_soon(other)
        gate = running_proxy.proxy.gate
        assert actions == ["allow"] * (n + 1)
        assert gate.counts[("allow", "screened_clear")] == n + 2  # each one screened, in time
        assert not gate.fallbacks  # none served unscreened
        assert other_done_while_burst_waits == [True]
        assert turns.waited_s_max > 0 and len(turns) == 0


async def test_a_wait_past_the_accounts_bound_is_served_unscreened_and_counted(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    n = 6
    policy = _screening_all(test_policy, 1)
    async with proxy_env(policy=policy) as running_proxy, classifier_env():
        # warm the model
        await action_for(running_proxy, "acct-warm", "What is a good bread recipe?")
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(action_for, running_proxy, "acct-burst", f"Bread question {i}?")
        gate = running_proxy.proxy.gate
        late = gate.fallbacks.get(("screen_account_queue", "open"), 0)
        assert late >= 1  # a classifier round trip takes longer than 1 ms
        assert gate.counts[("allow", "fail_open")] == late
        assert gate.counts[("allow", "screened_clear")] == n + 1 - late
        assert len(running_proxy.proxy.admission.screen_turns) == 0
