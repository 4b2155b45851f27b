"""An actor's turn in a commit cycle: its head signal decided on its state, as the append that
records it (events, inbox key, outbox commands, the state after). Pure CPU, no await, so a
commit cycle starts at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from safeguards.actors.actor import AccountActor, Envelope
from safeguards.core.codec import encode_command
from safeguards.core.decide import decide_and_fold
from safeguards.core.enforcement import commands_for
from safeguards.core.events import Signal
from safeguards.core.policy import Policy
from safeguards.core.ports import AppendRequest, OutboxMessage
from safeguards.core.state import AccountState
from safeguards.core.subjects import enforce_subject

if TYPE_CHECKING:
    from safeguards.actors.partition import PartitionWorker


@dataclass(slots=True)
class Round:
    """What one partition brings to one commit cycle: a decided head signal per ready actor."""

    worker: PartitionWorker
    turns: list[tuple[AccountActor, Envelope, AccountState]] = field(default_factory=list)
    requests: list[AppendRequest] = field(default_factory=list)
    rejected: list[tuple[AccountActor, Envelope, Exception]] = field(default_factory=list)


def decided_append(state: AccountState, signal: Signal, policy: Policy,
                   now: datetime) -> tuple[AppendRequest, AccountState]:
    """The append of one decision and the state it leads to; raises what deciding raised."""
    events, after = decide_and_fold(state, signal, policy, now)
    outbox = tuple(
        OutboxMessage(message_id=c.command_id, subject=enforce_subject(state.region, c.account_id),
                      payload=encode_command(c))
        for c in commands_for(events, policy)
    )
    return AppendRequest(account_id=state.account_id, expected_version=state.version,
                         events=tuple(events), inbox_key=signal.signal_id, outbox=outbox,
                         state_after=after), after
