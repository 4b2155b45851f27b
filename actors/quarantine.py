"""Quarantine: an account whose stored history cannot be read is set aside, not retried.

A history that does not decode (a corrupt row; an event of a schema version this node's codec
does not know, written by a newer node during a rolling deploy; a truncated history whose
retention base was made by a fold this node cannot carry, ``adapters/store/retention_base.py``)
is no store outage: loading it again fails the same way, and failing the partition only hands it
to the next owner, which fails in turn. So a load that fails to decode is repeated one account
at a time (``load_alone``) to find the accounts at fault; the partition then parks their signals
in the region's dead-letter stream under reason ``quarantined`` (kept there, replayable once a
node can read the history), raises the alarm once per account (an ERROR log line, the
``quarantined`` counter) and parks the account's later signals without loading it again. Every
other account of the partition carries on.

A quarantine is this node's finding, held in memory and not shared: another node may read what
this one cannot (a newer node during a rolling deploy), so it judges for itself. Finding it again
is cheap: the next owner's first load of a batch holding the account fails, the batch is loaded
again one account at a time, and the account's signals are parked from then on (one batch load
and ``load_batch`` single loads, once per owner; the alarm is raised once per owner). The node
itself reads the history again ``quarantine_recheck_s`` after the quarantine began, on the
account's next signal (``still_quarantined``), so a repaired row or a finished deploy ends it
without a restart; ``safeguards ops dlq replay`` then re-publishes the parked signals.
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


def still_quarantined(actor: AccountActor, now: float, settings: NodeSettings) -> bool:
    """Whether a signal of ``actor`` arriving ``now`` is parked. Once ``quarantine_recheck_s``
    has passed since its first parked signal, the quarantine ends and the actor is loaded again
    (a history still unreadable quarantines it anew, with a new alarm)."""
    if actor.quarantined is None:
        return False
    if actor.quarantined_at is None:
        actor.quarantined_at = now
    elif now - actor.quarantined_at >= settings.quarantine_recheck_s:
        log.warning("quarantined account: reading its history again after %.0f s",
                    now - actor.quarantined_at)
        actor.quarantined = actor.quarantined_at = None
        actor.state, actor.assumed_new, actor.activating = None, False, True
        return False
    return True


async def park_mail(actor: AccountActor, holding: dict[str, AccountActor],
                    settlement: MailSettlement, *extra: InboundMessage) -> int:
    """A quarantined actor's mail (and ``extra`` messages for it) to the dead-letter stream;
    it no longer holds mail. Returns how many of its mailbox's signals went."""
    holding.pop(actor.account_id, None)
    mail, actor.mailbox = list(actor.mailbox), deque()
    for msg in [env.msg for env in mail] + list(extra):
        await settlement.dead_letter(msg, DeadLetterReason.QUARANTINED, None)
    return len(mail)
