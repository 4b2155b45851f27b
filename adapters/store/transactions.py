"""A transaction whose outcome is settled before control returns to the caller.

Cancelling an append while its COMMIT is on the wire must not leave the outcome in the air: the
driver would drop the connection while the server may still commit, so the caller (and its next
read, on another connection) would see the append missing and then, a moment later, present.
The commit and the rollback therefore run shielded from cancellation (each bounded by the
driver's statement timeout); a cancellation that arrived meanwhile takes effect right after,
once what is stored is what the caller can read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)


@asynccontextmanager
async def settled_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """Like ``conn.begin()``, with a commit or rollback that a cancellation cannot cut short."""
    transaction = await conn.begin()
    try:
        yield
    except BaseException:
        with anyio.CancelScope(shield=True):
            try:
                await transaction.rollback()
            except Exception as exc:  # the connection is gone: the server aborts it anyway
                log.warning("rollback after a failed append did not complete (%s); dropping "
                            "the connection", type(exc).__name__, exc_info=True)
                await conn.invalidate()
        raise
    with anyio.CancelScope(shield=True):
        await transaction.commit()
