"""Operator actions: overrides, reviews and appeals, sent to the account's actor like any other
signal.

An operator never writes the store directly: the action becomes a ``Signal`` carrying an
``OperatorActionTaken``, ``ReviewClaimed``, ``AppealFiled`` or ``AppealResolved`` observation,
published to the account's input subject with ``Nats-Msg-Id`` = its signal id (a retried command
is deduplicated), and the account's actor decides on it, so the change, its reason and the
operator's identity land in the history and reach the inline adapters exactly as any other
enforcement does.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import anyio
from nats.aio.client import Client

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.nats_auth import NatsRole, nats_identity
from safeguards.adapters.operators import OperatorSigner
from safeguards.core.codec import encode_signal
from safeguards.core.errors import InvalidInput
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
                               operator: str) -> None:
    """Publish to the account's input stream, signed with ``operator``'s key (the nodes refuse
    an operator action no registered operator signed), and wait for JetStream to confirm it."""
    signer = OperatorSigner(operator)
    subject = inputs_subject(signal.region, partitions, signal.account_id)
    data = encode_signal(signal)
    with anyio.fail_after(PUBLISH_TIMEOUT_S):
        nc = await operator_connection(nats_url, signal.region)
        try:
            js = nc.jetstream()
            await js.publish(subject, data, headers={"Nats-Msg-Id": signal.signal_id,
                                                     **signer.headers(subject, data)},
                             timeout=PUBLISH_TIMEOUT_S)
        finally:
            await nc.drain()


def now_and_nonce() -> tuple[datetime, str]:
    return datetime.now(UTC), secrets.token_hex(8)

