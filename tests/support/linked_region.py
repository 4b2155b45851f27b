"""A pure model of a region's histories talking through forwarded signals (what the actors put
in the outbox: ``core.linked_accounts.forwarded_signals``): one state per history, an inbox per
history that absorbs a signal id seen before, and a queue. For linked-account tests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from safeguards.core.decide import decide_and_fold
from safeguards.core.events import (
    EnforcementChanged,
    Event,
    OperatorActionTaken,
    RequestObserved,
    Signal,
)
from safeguards.core.linked_accounts import LINK_ENFORCED_RULE, forwarded_signals
from safeguards.core.policy import Policy, default_policy
from safeguards.core.state import AccountState, fold, initial_state

T0 = datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
ORG = "org:acme"


@dataclass
class Region:
    """Histories deciding their signals and forwarding what their decisions send on."""

    policy: Policy = field(default_factory=default_policy)
    states: dict[str, AccountState] = field(default_factory=dict)
    histories: dict[str, list[Event]] = field(default_factory=dict)
    inboxes: dict[str, set[str]] = field(default_factory=dict)
    forwarded: list[Signal] = field(default_factory=list)

    def send(self, *signals: Signal) -> None:
        queue = deque(signals)
        while queue:
            signal = queue.popleft()
            inbox = self.inboxes.setdefault(signal.account_id, set())
            if signal.signal_id in inbox:
                continue  # the inbox absorbs a repeat
            inbox.add(signal.signal_id)
            before = self.state(signal.account_id)
            events, after = decide_and_fold(before, signal, self.policy, T0)
            assert fold(before, events) == after
            self.states[signal.account_id] = after
            self.histories.setdefault(signal.account_id, []).extend(events)
            out = forwarded_signals(before, signal, events, after, self.policy)
            self.forwarded += out
            queue.extend(out)

    def state(self, account: str) -> AccountState:
        return self.states.get(account) or initial_state(account, "eu")

    def level(self, account: str) -> int:
        return self.state(account).level

    def link_rules(self, account: str) -> list[tuple[int, int, str]]:
        return [(e.body.previous_level, e.body.level, e.body.reason)
                for e in self.histories.get(account, [])
                if isinstance(e.body, EnforcementChanged) and e.body.rule_id == LINK_ENFORCED_RULE]


def request(account: str, i: int, org: str | None = "acme", key: str | None = None) -> Signal:
    """A request naming the organisation ``org`` (and the API key fingerprint ``key``)."""
    return Signal(f"req-{account}-{i}", account, "eu", T0, f"c-{account}-{i}", RequestObserved(
        f"r-{account}-{i}", "m", "proxy", 1, 1, 10, "0" * 64, False, "allow",
        organization_id=org, api_key_fingerprint=key))


def set_level(entity: str, level: int, i: int = 0) -> Signal:
    """An operator setting ``entity``'s level (0: clearing it)."""
    return Signal(f"op-{entity}-{i}", entity, "eu", T0, f"op-{i}", OperatorActionTaken(
        "alice", "set_level" if level else "clear", level or None, None, "confirmed abuse"))
