"""An actor's turn in a commit cycle: its head signal decided on its state, as the append that
records it (events, inbox key, outbox rows, the state after). Pure CPU, no await, so a commit
cycle starts at once.

The outbox carries the enforcement commands the events send, and the signals they forward to
other histories (``core.linked_accounts``: scores to the prompts the account was linked to, its
links to their organisations and API keys, an aggregate's enforcement to its members): all leave
only after the transaction that decided them commits, so a forward is never lost and never made
twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanContext

from safeguards.actors import tracing
from safeguards.actors.actor import AccountActor, Envelope
from safeguards.core.codec import encode_command, encode_signal
from safeguards.core.decide import decide_and_fold
from safeguards.core.enforcement import commands_for
from safeguards.core.events import Signal
from safeguards.core.linked_accounts import forwarded_signals
from safeguards.core.policy import Policy
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.state import AccountState
from safeguards.core.subjects import enforce_subject, inputs_subject

if TYPE_CHECKING:
    from safeguards.actors.partition import PartitionWorker


@dataclass(slots=True)
class Round:
    """What one partition brings to one commit cycle: a decided head signal per ready actor."""

    worker: PartitionWorker
    turns: list[tuple[AccountActor, Envelope, AccountState]] = field(default_factory=list)
    requests: list[AppendRequest] = field(default_factory=list)
    rejected: list[tuple[AccountActor, Envelope, Exception]] = field(default_factory=list)
    # tracing on: the decision span of each traced request, by its index in ``requests``
    traces: dict[int, SpanContext] = field(default_factory=dict)

    def decide(self, actor: AccountActor, env: Envelope, state: AccountState, now: datetime
               ) -> bool:
        """Decide the actor's head signal into this round (True), or record it as rejected
        (False: deciding raised, and the signal leaves the mailbox)."""
        worker = self.worker
        span = None if tracing.TRACER is None else tracing.start_decision(
            env.msg.headers, type(env.signal.observation).__name__)
        try:
            request, after = decided_append(state, env.signal, worker.policy, now,
                                            worker.partitions)
        except Exception as exc:  # a decision that fails is a rejected signal, not a crash
            if span is not None:
                tracing.rejected(span, exc)
            self.rejected.append((actor, env, exc))
            return False
        if span is not None:
            self.traces[len(self.requests)] = tracing.decided(span, request)
        self.requests.append(request)
        self.turns.append((actor, env, after))
        return True


def decided_append(state: AccountState, signal: Signal, policy: Policy, now: datetime,
                   partitions: int) -> tuple[AppendRequest, AccountState]:
    """The append of one decision and the state it leads to; raises what deciding raised.
    ``partitions``: the region's, which name the input subject of a forwarded signal."""
    events, after = decide_and_fold(state, signal, policy, now)
    outbox = tuple(
        OutboxMessage(message_id=c.command_id, subject=enforce_subject(state.region, c.account_id),
                      payload=encode_command(c))
        for c in commands_for(events, policy)
    )
    forwarded = forwarded_signals(state, signal, events, after, policy)
    if forwarded:
        outbox += tuple(
            OutboxMessage(message_id=f.signal_id,
                          subject=inputs_subject(state.region, partitions, f.account_id),
                          payload=encode_signal(f))
            for f in forwarded
        )
    return AppendRequest(account_id=state.account_id, expected_version=state.version,
                         events=tuple(events), inbox_key=signal.signal_id, outbox=outbox,
                         state_after=after), after
