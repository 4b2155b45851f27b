"""Reading actors' states from the store for a partition: in batches, a few calls at once, and
telling a store failure (retried with backoff) from anything else (a bug: raised)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from safeguards.actors.actor import AccountActor
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.quarantine import load_alone
from safeguards.actors.settings import NodeSettings
from safeguards.core.errors import CodecError, ConcurrencyConflict, SafeguardsError
from safeguards.core.ports import EventStore


class ActivationGuess:
    """How often a first-seen account turns out to be new (a moving average over about the
    last 20): while most are, activate on the initial state and save the load; once most are
    not (a node that took over partitions, or restarted), load first and save the refused
    append."""

    def __init__(self) -> None:
        self.new_share = 1.0

    @property
    def assume_new(self) -> bool:
        return self.new_share >= 0.5

    def learn(self, new: bool) -> bool:
        """Count one account; True when the guess just turned to "load first"."""
        was = self.new_share
        self.new_share = 0.95 * was + (0.05 if new else 0.0)
        return was >= 0.5 > self.new_share


def is_store_failure(exc: BaseException) -> bool:
    if isinstance(exc, SafeguardsError):
        return exc.retryable and not isinstance(exc, ConcurrencyConflict)
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


async def load_states(store: EventStore, actors: Sequence[AccountActor], settings: NodeSettings,
                      metrics: NodeMetrics, learned: Callable[[bool], None]
                      ) -> tuple[str, int] | None:
    """Reads the states, ``load_batch`` accounts per store call and ``load_concurrency`` calls
    at once; ``learned(new)`` hears whether each account being activated turned out new.
    Returns (error, accounts not loaded) when some call failed."""
    failures: list[tuple[BaseException, int]] = []
    limiter = anyio.CapacityLimiter(settings.load_concurrency)

    async def load_chunk(chunk: Sequence[AccountActor]) -> None:
        async with limiter:
            try:
                with anyio.fail_after(settings.store_timeout_s):
                    states = await store.load_many([a.account_id for a in chunk])
            except CodecError:
                # some account's history does not decode: find which, load the others
                try:
                    await load_alone(store, chunk, settings, metrics)
                except Exception as exc:
                    if not is_store_failure(exc):
                        raise
                    failures.append((exc, len(chunk)))
                return
            except Exception as exc:
                if not is_store_failure(exc):
                    raise
                failures.append((exc, len(chunk)))
                return
            for actor in chunk:
                actor.state = states[actor.account_id]
                actor.assumed_new = False
                if actor.activating:
                    actor.activating = False
                    learned(actor.state.version == 0)
            metrics.loads += len(chunk)

    size = settings.load_batch
    async with anyio.create_task_group() as tg:
        for i in range(0, len(actors), size):
            tg.start_soon(load_chunk, actors[i:i + size])
    if not failures:
        return None
    return type(failures[0][0]).__name__, sum(n for _, n in failures)
