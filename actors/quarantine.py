"""Quarantine: an account whose stored history cannot be read is set aside, not retried.

A history that does not decode (a corrupt row; an event of a schema version this node's codec
does not know, written by a newer node during a rolling deploy) is no store outage: loading it
again fails the same way, and failing the partition only hands it to the next owner, which
fails in turn. So a load that fails to decode is repeated one account at a time
(``load_alone``) to find the accounts at fault; the partition then parks their signals in the
region's dead-letter stream under reason ``quarantined`` (kept there, replayable once a node
can read the history), raises the alarm once per account (an ERROR log line, the
``quarantined`` counter) and parks the account's later signals without loading it again. Every
other account of the partition carries on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import anyio

from safeguards.actors.actor import AccountActor
from safeguards.actors.metrics import NodeMetrics
from safeguards.actors.settings import NodeSettings
from safeguards.actors.settlement import MailSettlement
from safeguards.core.bus import DeadLetterReason, InboundMessage
from safeguards.core.errors import CodecError
from safeguards.core.ports import EventStore

log = logging.getLogger(__name__)


async def load_alone(store: EventStore, actors: Sequence[AccountActor],
                     settings: NodeSettings, metrics: NodeMetrics) -> None:
    """Load each actor by itself; one whose history does not decode is marked quarantined
    (its state stays None). Store failures propagate as from any load."""
    for actor in actors:
        try:
            with anyio.fail_after(settings.store_timeout_s):
                states = await store.load_many([actor.account_id])
        except CodecError as exc:
            actor.quarantined = type(exc).__name__
            metrics.quarantined += 1
            log.error("ALARM account history unreadable (%s): account quarantined, its "
                      "signals parked in the dead-letter stream", type(exc).__name__)
            continue
        actor.state = states[actor.account_id]
        actor.assumed_new = actor.activating = False
        metrics.loads += 1


async def park_mail(actor: AccountActor, holding: dict[str, AccountActor],
                    settlement: MailSettlement, *extra: InboundMessage) -> int:
    """A quarantined actor's mail (and ``extra`` messages for it) to the dead-letter stream;
    it no longer holds mail. Returns how many of its mailbox's signals went."""
    holding.pop(actor.account_id, None)
    mail, actor.mailbox = list(actor.mailbox), deque()
    for msg in [env.msg for env in mail] + list(extra):
        await settlement.dead_letter(msg, DeadLetterReason.QUARANTINED, None)
    return len(mail)
