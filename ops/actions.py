"""Operator actions: overrides, reviews and appeals, sent to the account's actor like any other
signal.

An operator never writes the store directly: the action becomes a ``Signal`` carrying an
``OperatorActionTaken``, ``ReviewClaimed``, ``AppealFiled`` or ``AppealResolved`` observation,
published to the account's input subject with ``Nats-Msg-Id`` = its signal id (a retried command
is deduplicated), and the account's actor decides on it, so the change, its reason and the
operator's identity land in the history and reach the inline adapters exactly as any other
enforcement does.

JetStream's acknowledgement is not the end of it: a broker can lose an acknowledged message
(Jepsen, NATS 2.12.1), and a refused or unprocessed signal changes nothing. So
``apply_operator_signal`` waits until the signal's inbox key is committed in the region's store
(the actor decided on it, in the same transaction as its events) before an action counts as
applied, publishing it again meanwhile (the inbox absorbs a repeat).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio
import nats.errors
from nats.aio.client import Client

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
from safeguards.adapters.operators import OperatorSigner
from safeguards.core.bus import BusUnavailable
from safeguards.core.codec import encode_signal
from safeguards.core.errors import InvalidInput, SafeguardsError
from safeguards.core.events import (
    AppealResolved,
    Observation,
    OperatorActionTaken,
    ReviewClaimed,
    Signal,
)
from safeguards.core.ids import derive_id, validate_account_id, validate_region
from safeguards.core.subjects import inputs_subject

PUBLISH_TIMEOUT_S = 10.0
APPLY_TIMEOUT_S = 30.0
REPUBLISH_S = 5.0


class NotApplied(SafeguardsError):
    """The action was sent but the account's actor had not committed it in time: refused
    (dead-lettered: an unregistered operator, a role that may not), or the region is
    behind or down. Retrying the same action is safe (its id deduplicates it)."""

    retryable = True


def operator_signal(account_id: str, region: str, observation: Observation, *,
                    now: datetime, nonce: str) -> Signal:
    """The signal for one operator action; ``nonce`` makes a deliberate repeat a new action."""
    validate_account_id(account_id)
    validate_region(region)
    if isinstance(observation, OperatorActionTaken | AppealResolved | ReviewClaimed):
        if not observation.operator.strip():
            raise InvalidInput("an operator action needs the operator's identity")
        if not observation.reason.strip():
            raise InvalidInput("an operator action needs a reason")
    level = (observation.level if isinstance(observation, OperatorActionTaken)
             else observation.level_after if isinstance(observation, AppealResolved) else None)
    if level is not None and not 0 <= level <= 5:
        raise InvalidInput(f"level must be 0..5, got {level}")
    signal_id = derive_id("operator", account_id, observation.TYPE, nonce)
    return Signal(signal_id, account_id, region, now, f"ops-{signal_id[:12]}", observation)


async def operator_connection(nats_url: str, region: str) -> Client:
    """A one-shot connection of the ops tools, as the region's operator role."""
    return await connect(nats_url, name="safeguards-ops", once=True,
                         identity=nats_identity(region, NatsRole.OPERATOR))


async def send_operator_signal(nats_url: str, partitions: int, signal: Signal,
                               operator: str, *, attempt: int = 0) -> None:
    """Publish to the account's input stream, signed with ``operator``'s key (the nodes refuse
    an operator action no registered operator signed), and wait for JetStream to confirm it."""
    signer = OperatorSigner(operator)
    subject = inputs_subject(signal.region, partitions, signal.account_id)
    data = encode_signal(signal)
    with anyio.fail_after(PUBLISH_TIMEOUT_S):
        nc = await operator_connection(nats_url, signal.region)
        try:
            js = nc.jetstream()
            # A re-send gets a message id of its own: the first one may sit in the stream's
            # duplicate window although the broker lost the message. The actor's inbox, keyed
            # by the signal id, is what keeps the action from applying twice.
            msg_id = signal.signal_id if attempt == 0 else f"{signal.signal_id}.{attempt}"
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id,
                                                     **signer.headers(subject, data)},
                             timeout=PUBLISH_TIMEOUT_S)
        finally:
            await nc.drain()


async def apply_operator_signal(nats_url: str, partitions: int, signal: Signal, operator: str,
                                committed: Callable[[str], Awaitable[bool]], *,
                                timeout_s: float = APPLY_TIMEOUT_S,
                                republish_s: float = REPUBLISH_S) -> float:
    """Send the action and wait until ``committed(signal_id)`` (the store's inbox holds its
    key); the seconds it took. Re-published every ``republish_s`` until then, so an
    acknowledged message the broker lost is sent again; ``NotApplied`` at ``timeout_s``."""
    start = time.monotonic()
    deadline = start + timeout_s
    next_publish = start
    attempt = 0
    while True:
        now = time.monotonic()
        if now >= next_publish:
            try:
                await send_operator_signal(nats_url, partitions, signal, operator,
                                           attempt=attempt)
                attempt += 1
            except (OSError, TimeoutError, BusUnavailable, nats.errors.Error) as exc:
                # NATS unreachable or no leader yet: try again until the deadline
                if now + republish_s >= deadline:
                    raise NotApplied(f"{signal.signal_id}: NATS unreachable "
                                     f"({type(exc).__name__})") from None
            next_publish = time.monotonic() + republish_s
        with anyio.move_on_after(max(1.0, deadline - time.monotonic())):
            if await committed(signal.signal_id):
                return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise NotApplied(f"{signal.signal_id} not committed within {timeout_s:.0f}s "
                             "(refused by the region's nodes, or they are behind)")
        await anyio.sleep(0.2)


def now_and_nonce() -> tuple[datetime, str]:
    return datetime.now(UTC), secrets.token_hex(8)

