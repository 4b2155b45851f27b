"""Each request's RequestObserved signal carries the fallback the gate took for that request, and
only that one, however requests interleave: the gate returns the fallback with its answer
(``Decision.fallback``) and the admission copies it onto its own request, with no note shared
between requests in flight (the real proxy, admission, gate and classifier). A prompt served
without a score goes to the content stream marked so (``ContentItem.served_unscored``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

import anyio
from csp_testkit import Region, RunningProxy, action_for, eventually

from safeguards.adapters.classifier.intake import ContentTriage, evidence_thresholds
from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.core.codec import decode_signal
from safeguards.core.events import RequestObserved
from safeguards.core.policy import Policy
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[[], contextlib.AbstractAsyncContextManager[ClassifierService]]

WAIT_S = 10.0
BENIGN = "What is a good recipe for banana bread with walnuts?"
# past the screening's length bound below: served unscreened, a counted fail-open
LONG = " ".join(["How long should I knead bread dough by hand before it rises?"] * 6)


async def _observed(region: Region, account: str) -> RequestObserved:
    """The account's one RequestObserved signal, from the region's inputs stream."""
    sub = await region.nc.jetstream().pull_subscribe(
        f"sg.{region.name}.acct.*.{account}", stream=stream_name(region.name, "INPUTS"))
    signals = [decode_signal(m.data).observation for m in await sub.fetch(1, timeout=5)]
    observed = [o for o in signals if isinstance(o, RequestObserved)]
    assert len(observed) == 1
    return observed[0]


async def test_interleaved_requests_each_carry_their_own_fallback(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    """One request is checked by the gate and then waits (its account's turn at the screening
    classifier is taken); meanwhile another request is checked, fails open and is served; then
    the first is screened and cleared. The first's signal has no fallback, the second's has its
    own: a fallback noted on the gate between one request's calls would have gone to both."""
    gate_policy = replace(test_policy.gate, screen_first_stage=False, screen_max_chars=200,
                          screen_account_queue_ms=WAIT_S * 1000)
    policy = replace(test_policy, gate=gate_policy)
    assert len(LONG) > gate_policy.screen_max_chars >= len(BENIGN)
    async with proxy_env(policy=policy) as running_proxy, classifier_env() as service:
        # the content stream's triage, every account's prompts past their fresh ones
        service.triage = triage = ContentTriage(evidence_thresholds(policy), fresh_prompts=0)
        proxy = running_proxy.proxy
        # warm the model
        await action_for(running_proxy, "acct-warm", "What is a good bread recipe?")
        turns = proxy.admission.screen_turns
        held, release = anyio.Event(), anyio.Event()
        actions: dict[str, str] = {}

        async def hold_turn() -> None:  # another screening of the account at the classifier
            async with turns.turn("acct-waits", WAIT_S, 32) as missed:
                assert missed == ""
                held.set()
                await release.wait()

        async def ask(account: str, text: str) -> None:
            actions[account] = await action_for(running_proxy, account, text)

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_turn)
            await held.wait()
            tg.start_soon(ask, "acct-waits", BENIGN)
            await eventually(lambda: turns.waiting("acct-waits") >= 1)  # checked, now waiting
            with anyio.fail_after(WAIT_S):
                await ask("acct-long", LONG)  # checked, failed open and served meanwhile
            assert "acct-waits" not in actions  # still waiting for its turn
            release.set()
        assert actions == {"acct-waits": "allow", "acct-long": "allow"}
        gate = proxy.gate
        assert gate.fallbacks.get(("screen_too_long", "open")) == 1
        await eventually(lambda: proxy.telemetry.sent >= 3, 10)
        waited = await _observed(region, "acct-waits")
        assert (waited.action, waited.fallback) == ("allow", None)
        long = await _observed(region, "acct-long")
        assert (long.action, long.fallback) == ("allow", "open:screen_too_long")
        # the prompt served unscreened reached the classifier marked (in the sealed item) and
        # was scored ahead of other content; the screened prompts and the completions were not.
        # (The scorer's other two first-line requests are the screenings themselves: both
        # accounts are fresh, and a probation screening goes first at the classifier.)
        await eventually(lambda: sum(triage.counts.values()) == 6, 10)  # 3 prompts, 3 answers
        assert triage.counts["unscored"] == 1 and service.primary.stats.first == 1 + 2
