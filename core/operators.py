"""Who may act on an account: operator roles and what each may do (pure rules).

An observation that only operators' tools send (overrides and clears, review claims, appeals,
policy proposals) is decided on only when a registered operator signed it (the adapters check the
signature, ``OperatorAuthority``) and that operator's role allows it:

- ``viewer``: reads only; no action.
- ``analyst``: notes, claims a review, files an appeal, sets a level up to L3.
- ``admin``: everything, including L4 and L5, clears, approvals and rejections, appeal outcomes
  and policy proposals.

The operator an observation names must be the operator who signed it: nobody acts in another's
name. Where the policy asks for it, two people decide the gravest actions
(``needs_second_operator``; the default policy: terminating an account, and clearing or lowering
a suspended one). The first operator's action is recorded as an ``ApprovalRequested`` and changes
nothing; a second admin's ``approve`` naming the same target level within ``APPROVAL_WINDOW_S``
carries it out; an admin's ``reject`` naming that level (its proposer's too: a withdrawal) drops it.
"""

from __future__ import annotations

from typing import Protocol

from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    Observation,
    OperatorActionTaken,
    PolicyProposed,
    ReviewClaimed,
    Signal,
)
from safeguards.core.homes import forwarded_problem

ROLES = ("viewer", "analyst", "admin")
ANALYST_MAX_LEVEL = 3
APPROVAL_WINDOW_S = 86_400  # an approval request lapses unapproved after a day
OPERATOR_OBSERVATIONS = (OperatorActionTaken, ReviewClaimed, AppealFiled, AppealResolved,
                         PolicyProposed)


def needs_second_operator(action: OperatorActionTaken, current_level: int, *,
                          set_level: int | None, lower_from: int | None) -> bool:
    """Whether ``action`` on an account now at ``current_level`` takes a second operator, under
    a policy's ``two_person_set_level`` and ``two_person_lower_from`` (None: never)."""
    lowering = lower_from is not None and current_level >= lower_from
    if action.action == "set_level" and action.level is not None:
        return ((set_level is not None and action.level >= set_level)
                or (lowering and action.level < current_level))
    return action.action == "clear" and lowering


def needs_operator(observation: Observation | None) -> bool:
    return isinstance(observation, OPERATOR_OBSERVATIONS)


def named_operator(observation: Observation) -> str | None:
    """The operator the observation says acted (None where it names none: an appeal is filed
    on the account holder's behalf)."""
    if isinstance(observation, AppealFiled):
        return None
    return getattr(observation, "operator", None)


def role_problem(role: str, observation: Observation) -> str | None:
    """None when ``role`` may do what ``observation`` records, else why not."""
    if role == "admin":
        return None
    if role != "analyst":
        return f"role {role!r} may not act"
    if isinstance(observation, ReviewClaimed | AppealFiled):
        return None
    if isinstance(observation, OperatorActionTaken):
        if observation.action == "note":
            return None
        if observation.action == "set_level" and (observation.level or 0) <= ANALYST_MAX_LEVEL:
            return None
    return f"role 'analyst' may not record {observation.TYPE} like this"


class OperatorAuthority(Protocol):
    """Checks an operator observation's proof (the adapters hold the keys)."""

    def problem(self, subject: str, data: bytes, headers: dict[str, str],
                signal: Signal) -> str | None:
        """None when a registered operator, whose role allows it, signed exactly this message
        and is the operator it names; else a short reason (a dead letter's)."""
        ...


class NoOperators:
    """Where no operator registry is configured: every operator action is refused."""

    def problem(self, subject: str, data: bytes, headers: dict[str, str],
                signal: Signal) -> str | None:
        return "no operator registry"


class MessageAuthority(Protocol):
    """Checks that one of the region's own parts produced a message (the adapters hold the
    keys): None when it did, else a short reason."""

    def problem(self, subject: str, data: bytes, headers: dict[str, str]) -> str | None: ...


class InputChecks:
    """What a node checks of every signal before deciding on it: an operator action needs its
    operator's proof; anything else the region's producers' proof (``producers`` None: not
    checked, for in-memory twins and tests that publish raw signals; every composition root
    passes the region's producer keys)."""

    def __init__(self, operators: OperatorAuthority | None = None,
                 producers: MessageAuthority | None = None,
                 forwarders: MessageAuthority | None = None) -> None:
        """``forwarders``: the forwarding keys of the regions that may serve this region's
        accounts (``core.homes``); what they sign is taken only if it is request metadata or
        a score."""
        self.operators: OperatorAuthority = operators or NoOperators()
        self.producers = producers
        self.forwarders = forwarders

    def problem(self, subject: str, data: bytes, headers: dict[str, str],
                signal: Signal) -> tuple[str, str] | None:
        """(dead-letter reason, detail) when the signal must not be decided on, else None."""
        if needs_operator(signal.observation):
            why = self.operators.problem(subject, data, headers, signal)
            return None if why is None else ("operator_unverified", why)
        if self.producers is not None:
            why = self.producers.problem(subject, data, headers)
            if why is not None and self.forwarders is not None \
                    and self.forwarders.problem(subject, data, headers) is None:
                refused = forwarded_problem(signal)
                return None if refused is None else ("producer_unverified", refused)
            return None if why is None else ("producer_unverified", why)
        return None
