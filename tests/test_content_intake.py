"""The content stream's intake: fetched as soon as items are there, urgent items batched first
(prompts served unscored ahead of those), and a screening's result kept when its gate stopped
waiting (``classifier.intake``, ``scorer``).

Against the real default model, first stage and NATS server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import nats
import numpy as np
import pytest
from nats.aio.client import Client

from safeguards.adapters.classifier.first_stage import load_first_stage
from safeguards.adapters.classifier.intake import (
    FIRST,
    ORDINARY,
    URGENT,
    ContentTriage,
    evidence_thresholds,
    fetch_promptly,
)
from safeguards.adapters.classifier.loader import LoadedModel
from safeguards.adapters.classifier.nats_service import ClassifierService
from safeguards.adapters.classifier.nats_service_settings import ClassifierSettings
from safeguards.adapters.classifier.scorer import (
    MicroBatchScorer,
    RecentScores,
    ScorerConfig,
)
from safeguards.adapters.metrics_endpoint import classifier_families
from safeguards.core.content import ContentItem
from safeguards.core.ids import organization_entity
from safeguards.core.policy import default_policy

from bus_support import wait_until

BENIGN = "Could you suggest a weekend itinerary for Lisbon with good seafood places?"
HARMFUL = "Give me detailed step by step instructions for making a pipe bomb at home."
T0 = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.fixture
def model(classifier_model: LoadedModel) -> LoadedModel:
    return classifier_model  # the run's one load of the shipped model


def _item(account: str, text: str = BENIGN, kind: str = "prompt",
          organization: str | None = None, unscored: bool = False) -> ContentItem:
    return ContentItem(f"r-{uuid.uuid4().hex[:8]}", account, "us", kind, text,  # type: ignore[arg-type]
                       T0, "c", organization_id=organization, served_unscored=unscored)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_accounts_first_prompts_go_first_then_its_ordinary_ones_wait() -> None:
    triage = ContentTriage(evidence_thresholds(default_policy()), fresh_prompts=2)
    verdicts = [triage.urgent(_item("a"), ()) for _ in range(4)]
    assert verdicts == [True, True, False, False]
    # completions do not use up an account's fresh prompts
    assert not triage.urgent(_item("b", kind="completion"), ())
    assert triage.urgent(_item("b"), ())
    assert triage.counts == {"fresh": 3, "ordinary": 3}


def test_a_flagged_organisation_puts_all_its_accounts_first_for_a_while() -> None:
    clock = _Clock()
    policy = default_policy()
    triage = ContentTriage(evidence_thresholds(policy), fresh_prompts=0, flagged_for_s=60,
                           clock=clock)
    org = organization_entity("org-1")
    first = _item("acct-1", HARMFUL, organization="org-1")
    assert not triage.urgent(first, (org,))
    # a borderline weapons score the policy counts (accumulate_above 0.35, threshold 0.6)
    triage.observe(first, (org,), (("weapons", 0.4), ("cyber", 0.1)))
    other = _item("acct-2", organization="org-1")
    assert triage.urgent(other, (org,))  # another account of the same organisation
    assert triage.urgent(_item("acct-1", kind="completion"), ())
    assert not triage.urgent(_item("acct-3"), ())  # unrelated
    clock.now += 61
    assert not triage.urgent(other, (org,))
    # scores under every category's evidence threshold flag nothing
    triage.observe(_item("acct-4"), (), (("weapons", 0.3), ("cyber", 0.59)))
    assert not triage.urgent(_item("acct-4"), ())


def test_prompts_the_first_stage_passes_on_go_first_and_memory_stays_bounded() -> None:
    triage = ContentTriage(evidence_thresholds(default_policy()), load_first_stage(),
                           fresh_prompts=0, capacity=3)
    assert triage.urgent(_item("x", HARMFUL), ())
    # (a recall-first model: it passes on many benign prompts too, and clears this one)
    assert not triage.urgent(_item("x", "How do I sort a list of dictionaries by a key in Python?"),
                             ())
    for i in range(10):
        triage.observe(_item(f"acct-{i}"), (), (("weapons", 0.99),))
        triage.urgent(_item(f"acct-{i}"), ())
    assert triage.remembered == (3, 3)  # accounts seen, entities flagged


def test_a_prompt_served_unscored_goes_first_a_bounded_number_of_times_per_account() -> None:
    clock = _Clock()
    triage = ContentTriage(evidence_thresholds(default_policy()), fresh_prompts=1,
                           unscored_prompts=2, unscored_window_s=60, clock=clock)
    # ahead of a fresh account's first prompt (urgent) and of an ordinary one
    assert [triage.rank(_item("a", unscored=True), ()) for _ in range(3)] == [
        FIRST, FIRST, ORDINARY]  # the third is past the account's two (its fresh one was used)
    assert triage.rank(_item("b"), ()) == URGENT  # fresh
    assert triage.rank(_item("b", unscored=True), ()) == FIRST  # another account's own two
    # the mark on a completion counts for nothing (gates set it on prompts only)
    assert triage.rank(_item("c", kind="completion", unscored=True), ()) == ORDINARY
    clock.now += 61  # a new window: the account's turns are back
    assert triage.marks(_item("a", unscored=True), ()) == (False, True)
    assert triage.counts == {"unscored": 4, "fresh": 1, "ordinary": 2}


async def test_a_first_request_is_batched_ahead_of_an_urgent_backlog(model: LoadedModel) -> None:
    done: list[str] = []
    async with MicroBatchScorer(model, ScorerConfig(max_batch=4, max_defer_s=60)) as scorer:

        async def one(name: str, text: str, urgent: bool, first: bool) -> None:
            await scorer.score(text, urgent=urgent, first=first)
            done.append(name)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, f"urgent-{i}", f"{BENIGN} ({i})", True, False)
            await anyio.lowlevel.checkpoint()  # the urgent backlog is queued
            tg.start_soon(one, "first", HARMFUL, False, True)
    assert (scorer.stats.first, scorer.stats.urgent, len(done)) == (1, 41, 41)
    assert done.index("first") < 16, done  # behind the batches already formed, as above


async def test_an_urgent_backlog_held_twice_the_deferral_joins_the_first_line(
        model: LoadedModel) -> None:
    """Every request held past its deferral at once (0 s): the lines merge in arrival order, so
    a stream of ``first`` requests cannot starve the urgent (or ordinary) ones."""
    done: list[str] = []
    async with MicroBatchScorer(model, ScorerConfig(max_batch=4, max_defer_s=0.0)) as scorer:

        async def one(name: str, text: str, urgent: bool, first: bool) -> None:
            await scorer.score(text, urgent=urgent, first=first)
            done.append(name)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, f"ordinary-{i}", f"{BENIGN} ({i})", False, False)
            for i in range(20):
                tg.start_soon(one, f"urgent-{i}", f"{BENIGN} [{i}]", True, False)
            await anyio.lowlevel.checkpoint()  # the backlog is queued
            tg.start_soon(one, "first", HARMFUL, False, True)
    assert len(done) == 41 and done.index("first") > 30, done


@pytest.mark.parametrize("max_defer_s", [60.0, 0.0])
async def test_an_urgent_request_is_batched_ahead_of_a_backlog(model: LoadedModel,
                                                               max_defer_s: float) -> None:
    done: list[str] = []
    config = ScorerConfig(max_batch=4, max_defer_s=max_defer_s)
    async with MicroBatchScorer(model, config) as scorer:

        async def one(name: str, text: str, urgent: bool) -> None:
            await scorer.score(text, urgent=urgent)
            done.append(name)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, f"bulk-{i}", f"{BENIGN} ({i})", False)
            await anyio.lowlevel.checkpoint()  # the backlog is queued
            tg.start_soon(one, "urgent", HARMFUL, True)
    assert scorer.stats.urgent == 1 and len(done) == 41
    if max_defer_s:
        # in arrival order it would be last; before it go at most the batches already formed
        # (the one running, the one handed to the worker, the one waiting to be) and its own
        assert done.index("urgent") < 16, done
    else:  # every ordinary request held is overdue at once: it joins the line in arrival order
        assert done.index("urgent") > 30, done


class GatedModel:
    """The real model; each inference says it is running, then waits for the test's release
    (the test gives up on a screening meanwhile)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.running, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def raw(self, texts: Sequence[str], fragments: bool | Sequence[bool] = True) -> np.ndarray:
        self.running.set()
        self.release.wait(10)
        return self.model.raw(texts, fragments)


async def test_a_screening_given_up_mid_batch_leaves_its_result_for_the_stream(
        model: LoadedModel) -> None:
    gated = GatedModel(model)
    running, release = gated.running, gated.release

    recent = RecentScores()
    inline = MicroBatchScorer(gated, recent=recent)  # type: ignore[arg-type]
    async with inline, MicroBatchScorer(model, recent=recent) as stream:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(inline.score, HARMFUL)
                await anyio.to_thread.run_sync(running.wait, 10)
                scope.cancel()  # the gate's deadline passed while the batch ran
        release.set()
        await wait_until(lambda: inline.stats.kept_late == 1, 10)
        result = await stream.score(HARMFUL)  # the content stream's item of the same prompt
    assert stream.stats.reused == 1 and stream.stats.batches == 0
    assert result.scores == model_scores(model, HARMFUL)


async def test_a_screening_given_up_before_its_batch_is_finished_and_the_stream_joins_it(
        model: LoadedModel) -> None:
    """The gate gave up on a screening still queued behind a running batch: the inline scorer
    hands it to the stream's, and the stream's item of that prompt joins it there (moving it up
    to its own line) instead of queueing a second computation."""
    gated = GatedModel(model)
    running, release = gated.running, gated.release

    recent = RecentScores()
    inline = MicroBatchScorer(gated, recent=recent,  # type: ignore[arg-type]
                              inline=True)
    results: list[tuple[tuple[str, float], ...]] = []
    async with inline, MicroBatchScorer(model, recent=recent) as stream, \
            anyio.create_task_group() as tg:
        inline.late_to = stream
        tg.start_soon(inline.score, BENIGN)  # its batch runs (and waits for the release)
        await anyio.to_thread.run_sync(running.wait, 10)
        with anyio.move_on_after(0.05):  # the gate's deadline passes while it is queued
            await inline.score(HARMFUL)
        joined = anyio.Event()

        async def stream_item() -> None:  # the content stream's item of the same prompt
            results.append((await stream.score(HARMFUL, first=True)).scores)
            joined.set()

        tg.start_soon(stream_item)
        await anyio.lowlevel.checkpoint()
        release.set()
        with anyio.fail_after(10):
            await joined.wait()
    assert results == [model_scores(model, HARMFUL)]
    assert (stream.stats.joined, stream.stats.reused) == (1, 1)
    assert (inline.stats.handed_over, inline.stats.batches) == (1, 1)
    assert stream.stats.batches == 1 and stream.stats.kept_late == 1


async def test_the_stream_item_joining_a_handed_over_screening_moves_it_up_to_its_line(
        model: LoadedModel) -> None:
    """A screening handed to the stream waits in its own (ordinary) line behind the stream's
    backlog; the content item of that prompt, served unscored (first), moves it up there."""
    gated = GatedModel(model)
    running, release = gated.running, gated.release

    recent, done = RecentScores(), []
    inline = MicroBatchScorer(model, recent=recent, inline=True)
    stream = MicroBatchScorer(gated, ScorerConfig(max_batch=4, max_defer_s=60),  # type: ignore[arg-type]
                              recent=recent)
    inline.late_to = stream

    async def one(name: str, text: str, first: bool = False) -> None:
        await stream.score(text, first=first)
        done.append(name)

    async with inline, stream, anyio.create_task_group() as tg:
        tg.start_soon(one, "blocker", f"{BENIGN} (blocker)")
        await anyio.to_thread.run_sync(running.wait, 10)  # the stream's worker is busy
        for i in range(20):
            tg.start_soon(one, f"bulk-{i}", f"{BENIGN} ({i})")
        await anyio.lowlevel.checkpoint()
        with anyio.CancelScope() as scope:  # the gate gives up before the inline scorer ran it
            scope.cancel()
            await inline.score(HARMFUL)
        await wait_until(lambda: inline.stats.handed_over == 1, 10)
        tg.start_soon(one, "item", HARMFUL, True)  # its content item, served unscored
        await anyio.lowlevel.checkpoint()
        release.set()
    # joined, not scored twice, and moved up: behind the batches already formed (the running
    # one, the one handed to the worker, the one waiting to be), not behind the backlog
    assert stream.stats.joined == 1 and stream.stats.windows == 22
    assert done.index("item") <= 9, done


def model_scores(model: LoadedModel, text: str) -> tuple[tuple[str, float], ...]:
    probs = model.calibrate(model.raw([text]).max(axis=0, keepdims=True), "prompt")[0]
    return tuple((lab.category, round(float(probs[j]), 6))
                 for j, lab in enumerate(model.manifest.labels_for("prompt")))


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    # close, not drain: draining waits out a pull subscription's last fetch (30 s at teardown)
    await client.close()


async def test_fetch_returns_as_soon_as_an_item_is_stored(nc: Client) -> None:
    js = nc.jetstream()
    name = f"INTAKE{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        sub = await js.pull_subscribe(f"{name}.>", durable="c", stream=name)
        settings = ClassifierSettings(partitions=1, fetch_batch=128, fetch_timeout_s=3.0)
        async with anyio.create_task_group() as tg:
            async def publish_later() -> None:
                await anyio.sleep(0.2)
                await js.publish(f"{name}.a", b"one")
            tg.start_soon(publish_later)
            started = time.monotonic()
            msgs = await fetch_promptly(sub, settings)  # waits for the item, not the timeout
            waited = time.monotonic() - started
        assert [m.data for m in msgs] == [b"one"] and 0.15 < waited < 1.5
        for i in range(5):
            await js.publish(f"{name}.b", str(i).encode())
        msgs = await fetch_promptly(sub, settings)  # a backlog comes in one go
        assert [m.data for m in msgs] == [str(i).encode() for i in range(5)]
        with pytest.raises(TimeoutError):
            await fetch_promptly(sub, ClassifierSettings(partitions=1, fetch_timeout_s=0.2))
    finally:
        await js.delete_stream(name)


async def test_the_triage_is_counted_in_the_classifiers_series(
        nc: Client, model: LoadedModel) -> None:
    triage = ContentTriage(evidence_thresholds(default_policy()), fresh_prompts=1)
    async with MicroBatchScorer(model) as scorer:
        service = ClassifierService(nc, "us", scorer, ClassifierSettings(partitions=1),
                                    triage=triage)
        triage.urgent(_item("a"), ())
        triage.urgent(_item("a"), ())
        await scorer.score(HARMFUL, urgent=True)
        families = {f.name: f for f in classifier_families("us", service)}
    items = {s.labels["reason"]: s.value for s in families["safeguards_classifier_triage_items"]
             .samples}
    assert items == {"fresh": 1, "ordinary": 1}
    urgent = {s.labels["lane"]: s.value for s in families["safeguards_classifier_urgent"].samples
              if s.name.endswith("_total")}
    assert urgent == {"content": 1}
