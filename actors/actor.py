"""One account's actor: its folded state and its bounded mailbox.

An actor is activated by the first signal for its account (its state is loaded from the store:
snapshot plus tail) and passivated when idle (its state is dropped; the store keeps everything).
The partition dispatcher gives each actor at most one turn at a time, so an account's signals
are decided one after another on the state the previous one committed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from safeguards.core.bus import InboundMessage
from safeguards.core.events import Signal
from safeguards.core.state import AccountState


@dataclass(slots=True)
class Envelope:
    """A decoded signal and the bus message to ack once its effect is committed."""

    signal: Signal
    msg: InboundMessage
    since: float = 0.0  # monotonic: when it arrived, or was last kept alive
    conflicts: int = 0

    @property
    def deliveries(self) -> int:
        """How many times the bus delivered it (read on demand: only rejects need it)."""
        return self.msg.deliveries


class MailboxFull(Exception):
    """The account already holds ``capacity`` signals awaiting their turn."""


@dataclass(slots=True)
class AccountActor:
    account_id: str
    capacity: int
    subject: str  # the input subject its signals must arrive on
    state: AccountState | None = None  # None: not loaded, or stale after a failed commit
    assumed_new: bool = False  # state is the initial one, not read from the store (see below)
    activating: bool = False  # first seen, state being loaded (not guessed new)
    in_turn: bool = False  # its head signal is in a commit cycle
    loading: bool = False  # its state is being read from the store
    quarantined: str | None = None  # why its history cannot be read: its signals are parked
    quarantined_at: float | None = None  # when a signal was first parked (``quarantine``)
    last_active: float = 0.0
    mailbox: deque[Envelope] = field(default_factory=deque)

    def offer(self, envelope: Envelope) -> None:
        if len(self.mailbox) >= self.capacity:
            raise MailboxFull(self.account_id)
        self.mailbox.append(envelope)

    @property
    def idle(self) -> bool:
        return not self.mailbox
