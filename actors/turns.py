"""An actor's turn in a commit cycle: its head signals decided in order, each on the state the
one before it leads to, each as the append that records it (events, inbox key, outbox rows, the
state after). Pure CPU, no await, so a commit cycle starts at once.

A turn takes up to ``NodeSettings.turn_signals`` of the account's waiting signals, not only its
head: an account (above all an organisation, which hears of every member's scores and links)
gets a few signals per request, and at one signal a cycle its mailbox fell seconds behind on a
loaded machine (an organisation's strikes committed 1-2 s after their scores were published, 12
signals deep). The decisions are the same as one a cycle (same fold, in the same order; one
``now`` for the turn), each still its own append with its own inbox key.

The outbox carries the enforcement commands the events send, and the signals they forward to
other histories (``core.linked_accounts``: scores to the prompts the account was linked to, its
links to their organisations and API keys, an aggregate's enforcement to its members): all leave
only after the transaction that decided them commits, so a forward is never lost and never made
twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
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
    """What one partition brings to one commit cycle: the decided head signals of each ready
    actor."""

    worker: PartitionWorker
    turns: list[tuple[AccountActor, Envelope, AccountState]] = field(default_factory=list)
    requests: list[AppendRequest] = field(default_factory=list)
    rejected: list[tuple[AccountActor, Envelope, Exception]] = field(default_factory=list)
    # tracing on: the decision span of each traced request, by its index in ``requests``
    traces: dict[int, SpanContext] = field(default_factory=dict)

    def decide_turn(self, actor: AccountActor, state: AccountState, now: datetime, limit: int
                    ) -> Envelope | None:
        """Decide up to ``limit`` of the actor's waiting signals into this round, in order, each
        on the state the one before leads to. Returns the head signal when deciding it raised
        (rejected: it leaves the mailbox); a later signal whose decision raises ends the turn
        before it and is decided again as the head of the next turn (rejected there)."""
        for i, env in enumerate(islice(actor.mailbox, max(1, limit))):
            if not self.decide(actor, env, state, now, reject=i == 0):
                return env if i == 0 else None
            state = self.turns[-1][2]
        return None

    def decide(self, actor: AccountActor, env: Envelope, state: AccountState, now: datetime,
               *, reject: bool = True) -> bool:
        """Decide one signal of the actor into this round (True), or (False: deciding raised)
        record it as rejected where ``reject`` (it leaves the mailbox)."""
        worker = self.worker
        span = None if tracing.TRACER is None else tracing.start_decision(
            env.msg.headers, type(env.signal.observation).__name__)
        try:
            request, after = decided_append(state, env.signal, worker.policy, now,
                                            worker.partitions)
        except Exception as exc:  # a decision that fails is a rejected signal, not a crash
            if span is not None:
                tracing.rejected(span, exc)
            if reject:
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
