"""The global home register: where an account was first claimed, and notices of every move.

The regions' directories (``bus.homes``) stay the authority on homes; this one bucket shared by
every region, ``sg_home_claims``, keyed like them by a digest of the account id
(:func:`core.homes.directory_key`: it names no account) and valued with a
:class:`HomeEntry`, settles two things a per-region directory cannot:

- **who claims a new account**: two regions' gates serving its first requests at the same
  moment each find no directory entry. Each creates the register's key (create-if-absent: the
  server takes exactly one create), and only the region it names writes its own directory
  entry; the other routes the account there. So one home, one history, whichever asked first.
- **that an account moved or was onboarded**: ``ops migrate-home`` and ``ops home --onboard``
  overwrite the key, so every gate, watching the register's new writes (headers only: the key,
  never a value), drops the home it kept for that account and asks the directories again on
  the account's next request (:class:`csp.homes.HomeRouting`).

Gates and operators may write it (a gate's creates, an operator's moves); any of them could
also overwrite another region's claim. A claim is read only where no directory holds the
account (directories win), and a claim naming a region the reader does not know is counted
and served as the reader's own, never followed.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from safeguards.adapters.bus.homes import create_entry, entry_bytes, put_entry
from safeguards.adapters.bus.leases import open_bucket
from safeguards.core.homes import (
    HomeEntry,
    MalformedHomeEntry,
    decode_entry,
    directory_key,
)

log = logging.getLogger(__name__)

CLAIMS_BUCKET = "sg_home_claims"
CLAIMS_STREAM = f"KV_{CLAIMS_BUCKET}"
CLAIMS_SUBJECTS = f"$KV.{CLAIMS_BUCKET}.>"


def claim_key(subject: str) -> str | None:
    """The directory key a register subject names (None: not one of the register's)."""
    prefix = f"$KV.{CLAIMS_BUCKET}."
    return subject[len(prefix):] if subject.startswith(prefix) else None


class HomeClaims:
    """The register, as one gate or operator sees it."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.malformed = 0  # values this build cannot read (counted, skipped)

    @classmethod
    async def open(cls, js: JetStreamContext) -> HomeClaims:
        kv = await open_bucket(js, CLAIMS_BUCKET, history=1, direct=True,
                               description="first claims and moves of account homes")
        return cls(kv)

    async def claim(self, account_id: str, entry: HomeEntry) -> HomeEntry | None:
        """Create the account's key with ``entry`` unless it exists; the entry the register
        holds afterwards (ours, or the one that won; None where that one is unreadable)."""
        if await create_entry(self._kv, directory_key(account_id), entry, "home register claim"):
            return entry
        return await self.get(account_id)

    async def get(self, account_id: str) -> HomeEntry | None:
        value = await entry_bytes(self._kv, directory_key(account_id), "home register read")
        if value is None:
            return None
        try:
            return decode_entry(value)
        except MalformedHomeEntry:
            self.malformed += 1
            log.error("home register: an entry this build cannot read (skipped)")
            return None

    async def notice(self, account_id: str, entry: HomeEntry) -> None:
        """Overwrite the account's key (operators: an onboarding or a migration), so that
        every gate watching drops the home it kept."""
        await put_entry(self._kv, directory_key(account_id), entry, "home register notice")
