"""Operator actions from the console: the same observations the ``ops`` commands send.

``claim`` is ``ops queue claim`` (a ``ReviewClaimed``); ``decide`` is ``ops queue decide`` and
``override`` is ``ops override`` (an operator ``set_level``); ``clear``, ``approve``, ``reject``,
``note``,
``appeal-file`` and ``appeal-resolve`` are their ``ops`` namesakes. Each is checked against the
operator's role here (the nodes check it again, with the signature), then published to the
account's input subject signed with the operator's key (``ops.actions.send_operator_signal``).
The two-person rule is the actor's: an override to L5 or a clear of a suspended account becomes
an approval request until a second admin approves it; ``before_send`` lets the console check
an approval against the account's state first (``console.approvals.check_approval``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from safeguards.core.errors import InvalidInput
from safeguards.core.events import (
    AppealFiled,
    AppealResolved,
    Observation,
    OperatorActionTaken,
    ReviewClaimed,
)
from safeguards.core.ids import validate_account_id
from safeguards.core.operators import role_problem
from safeguards.ops.actions import now_and_nonce, operator_signal, send_operator_signal

ACTIONS = ("claim", "decide", "override", "clear", "approve", "reject", "note", "appeal-file",
           "appeal-resolve")
MAX_REASON = 500
MAX_NAME = 100


class ActionRefused(InvalidInput):
    """The signed-in operator's role does not allow this action (a 403, not a bad form)."""


@dataclass(frozen=True, slots=True)
class Sent:
    action: str
    account: str
    signal_id: str
    observation: str
    level: int | None


def _level(fields: dict[str, str], name: str = "level") -> int:
    text = fields.get(name, "")
    if not text.isdigit() or not 0 <= int(text) <= 5:
        raise InvalidInput(f"{name} must be 0..5")
    return int(text)


def _reason(fields: dict[str, str], default: str | None = None) -> str:
    reason = fields.get("reason", "").strip() or (default or "")
    if not reason:
        raise InvalidInput("a reason is required (it is kept in the history)")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"a reason is at most {MAX_REASON} characters")
    return reason


def _name(fields: dict[str, str], name: str, what: str) -> str:
    value = fields.get(name, "").strip()
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise InvalidInput(f"{what} is required (at most {MAX_NAME} printable characters)")
    return value


def observation_for(action: str, operator: str, fields: dict[str, str]) -> Observation:
    if action == "claim":
        return ReviewClaimed(operator, _reason(fields, "claimed for review"))
    if action in ("decide", "override"):
        return OperatorActionTaken(operator, "set_level", _level(fields), None, _reason(fields))
    if action == "clear":
        return OperatorActionTaken(operator, "clear", None, None, _reason(fields))
    if action in ("approve", "reject"):
        verdict: Literal["approve", "reject"] = "approve" if action == "approve" else "reject"
        return OperatorActionTaken(operator, verdict, _level(fields), None, _reason(fields))
    if action == "note":
        return OperatorActionTaken(operator, "note", None, None, _reason(fields))
    if action == "appeal-file":
        return AppealFiled(_name(fields, "appeal_id", "an appeal id"),
                           _name(fields, "filed_by", "who filed the appeal"), _reason(fields))
    if action == "appeal-resolve":
        outcome: Literal["upheld", "overturned"]
        if fields.get("outcome") == "upheld":
            outcome = "upheld"
        elif fields.get("outcome") == "overturned":
            outcome = "overturned"
        else:
            raise InvalidInput("outcome must be upheld or overturned")
        return AppealResolved(_name(fields, "appeal_id", "an appeal id"), operator, outcome,
                              _level(fields, "level_after"), _reason(fields))
    raise InvalidInput(f"unknown action; one of {', '.join(ACTIONS)}")


BeforeSend = Callable[[str, Observation], Awaitable[None]]


async def console_action(config: Any, operator: str, role: str, fields: dict[str, str], *,
                         before_send: BeforeSend | None = None) -> Sent:
    """Checks the action against the operator's role, then ``before_send(account,
    observation)`` (which raises to stop it), then sends it."""
    account = validate_account_id(fields.get("account", ""))
    action = fields.get("action", "")
    observation = observation_for(action, operator, fields)
    problem = role_problem(role, observation)
    if problem is not None:
        raise ActionRefused(f"{operator} ({role}): {problem}")
    if before_send is not None:
        await before_send(account, observation)
    if not config.nats_url:
        raise InvalidInput("this console has no NATS to send actions on")
    now, nonce = now_and_nonce()
    signal = operator_signal(account, config.region, observation, now=now, nonce=nonce)
    await send_operator_signal(config.nats_url, config.partitions, signal, operator)
    level = getattr(observation, "level", None) if not action.startswith("appeal") else None
    return Sent(action, account, signal.signal_id, observation.TYPE, level)
