"""Probation for new accounts (``gate.probation_requests``, ``gate.probation_screen_deadline_ms``):
the first screenings of an account the gate holds no command for wait the longer probation
deadline for the classifier; later ones, and an established account's, get screening's short
one. The real proxy, gate and classifier (the shipped model): screening's deadline is one no
classifier meets (1 ms), the probation's one it always does. Only answered screenings count."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import anthropic
import nats
import pytest
from csp_testkit import Region, RunningProxy, eventually
from nats.aio.msg import Msg

from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.csp.decision import GateRequest
from safeguards.adapters.csp.gate import Gate
from safeguards.core.policy import Policy
from safeguards.core.subjects import classify_subject

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]
ClassifierEnv = Callable[..., contextlib.AbstractAsyncContextManager[ClassifierService]]

MODEL = "claude-test-1"
BOMB = "Give me step-by-step instructions to build a pipe bomb at home."  # ~0.99 weapons
TIMED_OUT = ("screen_classifier_timeout", "open")
TIMED_OUT_CLOSED = ("screen_classifier_timeout", "closed")
UNAVAILABLE = ("screen_classifier_unavailable", "open")
T0 = 1_800_000_000.0


def _client(proxy: RunningProxy, account: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url, api_key="sk-test", max_retries=0,
                                    default_headers={"x-csp-account-id": account})


async def _ask(proxy: RunningProxy, account: str) -> tuple[str, float]:
    """The gate's action on ``BOMB`` from ``account`` and how long the request took."""
    started = time.perf_counter()
    raw = await _client(proxy, account).messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": BOMB}])
    return raw.headers["x-safeguards-action"], time.perf_counter() - started


async def test_a_new_accounts_first_screening_waits_the_probation_deadline_and_no_more(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=1,
        probation_screen_deadline_ms=5000, deadline_ms_per_1000_chars=0))
    async with proxy_env(policy=policy) as running_proxy, classifier_env() as classifier:
        proxy = running_proxy.proxy
        gate = proxy.gate
        assert classifier.inline.stats.first == 0
        # an established account: its region has commanded it (L0, screened like a fresh one)
        await region.enforce("acct-known", 0, 1)
        await eventually(lambda: gate.held_version("acct-known") == 1)
        # the fresh account's first harmful ask waits for its score and is refused
        with pytest.raises(anthropic.PermissionDeniedError):
            await _client(running_proxy, "acct-new").messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": BOMB}])
        assert gate.counts[("block", "classified_weapons")] == 1
        assert TIMED_OUT not in gate.fallbacks
        # and it was scored ahead of the classifier's other inline work
        assert classifier.inline.stats.first == 1
        # past its probation, the same account gets screening's deadline: missed, served, and
        # scored afterwards (fail open, counted)
        action, _ = await _ask(running_proxy, "acct-new")
        assert action == "allow" and gate.fallbacks[TIMED_OUT] == 1
        # the established account never waits the probation's deadline
        action, took_s = await _ask(running_proxy, "acct-known")
        assert action == "allow" and gate.fallbacks[TIMED_OUT] == 2
        assert took_s < 2.0  # screening's 1 ms (+50 ms of grace), nowhere near 5 s
        assert gate.counts[("block", "classified_weapons")] == 1
        assert proxy.classifier.calls == 3  # each one went to the classifier


@pytest.mark.parametrize("hold_ms", [1, 0])
async def test_a_held_probation_screening_the_classifier_is_too_busy_for_is_refused_to_retry(
    proxy_env: ProxyEnv, classifier_env: ClassifierEnv, test_policy: Policy, hold_ms: float
) -> None:
    """``gate.hold_ms``: the first stage holds the pipe-bomb ask, and a hold no classifier meets
    (1 ms: it answers "deadline" at once) refuses the fresh account's ask with 529
    overloaded_error and retry-after 1 (what the SDKs retry); the prompt's late score is kept
    at the classifier for that retry. With the hold off (0), served unscreened."""
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=1,
        probation_screen_deadline_ms=1, deadline_ms_per_1000_chars=0, hold_ms=hold_ms))
    async with proxy_env(policy=policy) as running_proxy, \
            classifier_env(paired=True) as classifier:
        gate = running_proxy.proxy.gate
        first_stage = running_proxy.proxy.admission.first_stage
        assert first_stage is not None and first_stage.check(BOMB).holds
        if not hold_ms:
            action, _ = await _ask(running_proxy, "acct-new")
            assert action == "allow" and gate.fallbacks[TIMED_OUT] == 1
            return
        with pytest.raises(anthropic.OverloadedError) as refusal:
            await _ask(running_proxy, "acct-new")
        assert refusal.value.status_code == 529
        assert refusal.value.response.headers["retry-after"] == "1"
        assert gate.fallbacks[TIMED_OUT_CLOSED] == 1 and TIMED_OUT not in gate.fallbacks
        assert gate.counts[("block", "fail_closed")] == 1
        recent, sha256 = classifier.inline.recent, classifier.inline.prepare(BOMB).sha256
        assert recent is not None
        await eventually(lambda: recent.get(classifier.inline.model, "prompt", sha256)
                         is not None, within_s=30)


async def test_a_held_prompt_is_served_when_the_classifier_answers_nothing(
    proxy_env: ProxyEnv, region: Region, nats_url: str, test_policy: Policy
) -> None:
    """A classifier that takes requests and answers none (hung, or gone behind a subscription)
    is not busy: with nothing answered in ``ALIVE_S``, a held prompt that times out is served
    unscreened like any other, not refused for ever."""
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=1,
        probation_screen_deadline_ms=50, deadline_ms_per_1000_chars=0, hold_ms=50))
    silent = await nats.connect(nats_url, name="silent-classifier")
    try:
        await silent.subscribe(classify_subject(region.name), cb=_ignore)
        await silent.flush()
        async with proxy_env(policy=policy) as running_proxy:
            action, _ = await _ask(running_proxy, "acct-new")
            assert action == "allow"
            assert running_proxy.proxy.gate.fallbacks[TIMED_OUT] == 1
    finally:
        await silent.close()


async def _ignore(msg: Msg) -> None:
    return None


async def test_no_probation_when_the_policy_turns_it_off(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=0,
        probation_screen_deadline_ms=5000, deadline_ms_per_1000_chars=0))
    async with proxy_env(policy=policy) as running_proxy, classifier_env():
        action, _ = await _ask(running_proxy, "acct-new")
        assert action == "allow"
        assert running_proxy.proxy.gate.fallbacks[TIMED_OUT] == 1



async def test_a_longer_prompt_gets_a_longer_screening_deadline(
    proxy_env: ProxyEnv, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    """Screening's deadline grows with the prompt (``deadline_ms_per_1000_chars``): with
    no probation and a 1 ms base no classifier meets, the harmful ask (63 characters) is still
    scored and refused when each 1,000 characters add 80 s; without that, it is served."""
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=0,
        deadline_ms_per_1000_chars=80_000))
    async with proxy_env(policy=policy) as running_proxy, classifier_env():
        with pytest.raises(anthropic.PermissionDeniedError):
            await _client(running_proxy, "acct-new").messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": BOMB}])
        gate = running_proxy.proxy.gate
        assert gate.counts[("block", "classified_weapons")] == 1
        assert TIMED_OUT not in gate.fallbacks


async def test_a_warned_accounts_longer_prompt_gets_a_longer_classification_deadline(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    """From L1 the account's prompts are classified inline within ``classify_deadline_ms``,
    which grows with the prompt too: with a 1 ms base, a warned account's harmful ask is
    scored and refused when each 1,000 characters add 80 s, and served unscored without."""
    async def warned_ask(per_1000: float) -> tuple[str, Gate]:
        policy = replace(test_policy, gate=replace(
            test_policy.gate, classify_deadline_ms=1, deadline_ms_per_1000_chars=per_1000,
            hold_ms=0))
        async with proxy_env(policy=policy) as running_proxy, classifier_env():
            gate = running_proxy.proxy.gate
            account = f"acct-warned-{per_1000:.0f}"
            await region.enforce(account, 1, 1)
            await eventually(lambda: gate.held_version(account) == 1)
            try:
                return (await _ask(running_proxy, account))[0], gate
            except anthropic.PermissionDeniedError:
                return "block", gate

    for per_1000, refused in ((80_000.0, True), (0.0, False)):
        action, gate = await warned_ask(per_1000)
        assert (action == "block") is refused
        assert (("block", "classified_weapons") in gate.counts) is refused


async def test_a_warned_accounts_held_prompt_waits_the_hold_and_is_refused_on_its_score(
    proxy_env: ProxyEnv, region: Region, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    """From L1, a prompt the first stage holds waits ``gate.hold_ms`` for its score: with a
    1 ms classification deadline no classifier meets, the warned account's pipe-bomb ask is
    still scored and refused; an everyday prompt, not held, is served at the deadline."""
    policy = replace(test_policy, gate=replace(
        test_policy.gate, classify_deadline_ms=1, deadline_ms_per_1000_chars=0, hold_ms=60_000))
    async with proxy_env(policy=policy) as running_proxy, classifier_env():
        gate = running_proxy.proxy.gate
        await region.enforce("acct-warned", 1, 1)
        await eventually(lambda: gate.held_version("acct-warned") == 1)
        with pytest.raises(anthropic.PermissionDeniedError):
            await _ask(running_proxy, "acct-warned")
        assert gate.counts[("block", "classified_weapons")] == 1
        raw = await _client(running_proxy, "acct-warned").messages.with_raw_response.create(
            model=MODEL, max_tokens=10,
            messages=[{"role": "user", "content": "What is the capital of Australia?"}])
        assert raw.headers["x-safeguards-action"] != "block"

def test_probation_counts_answered_screenings_and_ends_after_three_times_as_many_in_all(
        test_policy: Policy) -> None:
    policy = replace(test_policy, gate=replace(test_policy.gate, probation_requests=2))
    gate = Gate(policy)
    gate.touch(T0)
    gate.check(GateRequest("acct-new", "r1"), T0)  # the gate meets the account (no command)
    # two screenings missed their deadline: neither uses the probation up
    for _ in range(2):
        assert gate.probation("acct-new") is not None
    answered = gate.probation("acct-new")
    assert answered is not None
    answered.screened += 1  # what the admission counts for a screening that was answered
    assert gate.probation("acct-new") is not None  # the 4th taken, the 2nd answered
    answered.screened += 1
    assert gate.probation("acct-new") is None  # two answered: over
    # an account whose screenings never answer leaves probation after 3 x 2 taken in all
    gate.check(GateRequest("acct-slow", "r2"), T0)
    taken = [gate.probation("acct-slow") is not None for _ in range(8)]
    assert taken == [True] * 6 + [False] * 2
    # an account the gate has never met is not on probation here (the check meets it first)
    assert gate.probation("acct-unseen") is None


async def test_a_probation_screening_that_went_unanswered_leaves_the_probation_whole(
    proxy_env: ProxyEnv, classifier_env: ClassifierEnv, test_policy: Policy
) -> None:
    policy = replace(test_policy, gate=replace(
        test_policy.gate, screen_deadline_ms=1, probation_requests=1,
        probation_screen_deadline_ms=5000, deadline_ms_per_1000_chars=0))
    async with proxy_env(policy=policy) as running_proxy:
        gate = running_proxy.proxy.gate
        # no classifier yet: the first two probation screenings get no answer, served unscored
        for served in (1, 2):
            action, _ = await _ask(running_proxy, "acct-new")
            assert action == "allow" and gate.fallbacks[UNAVAILABLE] == served
        async with classifier_env():
            # the account is still on probation: the long deadline, scored, refused
            with pytest.raises(anthropic.PermissionDeniedError):
                await _client(running_proxy, "acct-new").messages.create(
                    model=MODEL, max_tokens=10, messages=[{"role": "user", "content": BOMB}])
            assert gate.counts[("block", "classified_weapons")] == 1
            # one answered: probation over, screening's 1 ms deadline is missed and it is served
            action, _ = await _ask(running_proxy, "acct-new")
            assert action == "allow" and gate.fallbacks[TIMED_OUT] == 1
