"""Caller-assertion nonces taken once in the whole region, not once per host.

A proxy host's workers share one replay table (``shared_nonces``) and ext_proc keeps its own, so
without more an assertion captured once could be replayed once at every other host of the
region (several proxy hosts, several ext_proc instances behind Envoy). After the host's table
has taken a nonce (a cheap refusal of same-host replays, no network), ``RegionLedger.take``
takes it in the region's ledger (``bus.nonce_bucket``): an atomic create of a KV key, over the
gate's own NATS connection (``InlineGate.link``), with a short deadline. A key that exists is a
nonce another host (or this one) took: ``replayed``, refused 401 as the host's table refuses.

The key is a keyed digest of the nonce: BLAKE2b keyed by a key derived from the secret of the
caller key that signed the assertion (every host that can verify an assertion holds that
secret, so every host derives the same key, and nothing that reads the bucket or the server's
traffic learns a nonce or can aim keys at one). The raw nonce never leaves the process.

When the ledger cannot answer in ``deadline_s`` (NATS down or reconnecting, the bucket missing,
JetStream without a leader, a slow reply), the ``mode`` decides (``FrontEndConfig.nonce_ledger``):

- ``required`` (the default where the gate has a NATS URL): the request is refused with 503 in
  the provider's shape; the region cannot prove the assertion was not used elsewhere.
- ``local``: the host's table alone has the word (the assertion is accepted once on this host;
  a replay at another host during the outage is not caught).

Either way it is counted (``safeguards_csp_nonce_ledger_unavailable_total{reason,action}``) and
logged at most once every ``LOG_EVERY_S`` with the count since the last line, never per request.
A refusal before the ledger has answered leaves the nonce taken in the host's table: a front
door that retries signs the retry anew (``SignedCaller`` does), as every request must.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS

from safeguards.adapters.bus.nonce_bucket import nonce_subject
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.shared_nonces import REPLAYED
from safeguards.adapters.csp.sparse_warning import EVERY_S, SparseWarning
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)

MODES = ("required", "local")
DEFAULT_DEADLINE_S = 0.1  # FrontEndConfig.nonce_ledger_deadline_s says why
LOG_EVERY_S = EVERY_S
WRONG_LAST_SEQUENCE = 10071  # JetStream: the subject already holds a message
UNAVAILABLE_MESSAGE = "the replay check is unavailable: try again shortly"
_EXPECT_NONE = {"Nats-Expected-Last-Subject-Sequence": "0"}
_KEY_CONTEXT = b"sg-nonce-ledger-v1"


@functools.lru_cache(maxsize=64)
def _hash_key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_CONTEXT, hashlib.sha256).digest()


def ledger_key(secret: bytes, nonce: str) -> str:
    """The ledger's key for ``nonce`` (32 hex digits) taken with an assertion signed by the
    caller key whose secret is ``secret``: 32 hex digits of keyed digest."""
    return hashlib.blake2b(bytes.fromhex(nonce), key=_hash_key(secret),
                           digest_size=16).hexdigest()


def ledger_mode(mode: str | None, nats_url: str | None) -> str | None:
    """The mode a front end runs its ledger in: ``mode`` where set, else ``required`` with a
    NATS URL; None: no ledger (a gate without NATS has only its host's table)."""
    if mode is None:
        return "required" if nats_url else None
    if mode not in MODES:
        raise ValueError(f"nonce_ledger must be one of {MODES}, got {mode!r}")
    if not nats_url:
        raise ValueError("a nonce ledger needs the region's NATS URL")
    return mode


class RegionLedger:
    def __init__(self, region: str, connection: Callable[[], NATS | None], *,
                 mode: str = "required", deadline_s: float = DEFAULT_DEADLINE_S,
                 on_unavailable: Callable[[str, str], None] | None = None) -> None:
        """``connection``: the gate's NATS connection now (None while it has none);
        ``on_unavailable(reason, action)``: the metric."""
        if mode not in MODES:
            raise ValueError(f"nonce_ledger must be one of {MODES}, got {mode!r}")
        if not deadline_s > 0:
            raise ValueError("the nonce ledger's deadline must be positive")
        self.region = validate_region(region)
        self.mode = mode
        self.deadline_s = deadline_s
        self._connection = connection
        self.on_unavailable = on_unavailable
        self.unavailable: dict[str, int] = {}  # by reason
        self._warning = SparseWarning(log, LOG_EVERY_S)

    async def take(self, secret: bytes, nonce: str) -> str | None:
        """None when the region had not seen ``nonce`` (or, in ``local`` mode, could not say);
        ``replayed`` when it had. Raises BadRequest(503) in ``required`` mode when the ledger
        did not answer in time."""
        outcome = await self._create(nonce_subject(self.region, ledger_key(secret, nonce)))
        if outcome is None or outcome == REPLAYED:
            return outcome
        action = "refused" if self.mode == "required" else "local_only"
        self._note(outcome, action)
        if self.mode == "required":
            raise BadRequest(503, UNAVAILABLE_MESSAGE)
        return None

    async def _create(self, subject: str) -> str | None:
        """None: created; ``replayed``: the key exists; else why the ledger did not say."""
        nc = self._connection()
        if nc is None or not nc.is_connected:
            return "disconnected"
        try:
            reply = await nc.request(subject, b"", timeout=self.deadline_s, headers=_EXPECT_NONE)
        except nats.errors.TimeoutError:
            return "timeout"
        except nats.errors.NoRespondersError:
            return "no_ledger"  # no stream takes the subject: the bucket is not provisioned
        except nats.errors.Error as exc:
            log.debug("nonce ledger request failed: %s", type(exc).__name__)
            return "bus_error"
        try:
            answer = json.loads(reply.data)
        except ValueError:
            return "bad_reply"
        if not isinstance(answer, dict):
            return "bad_reply"
        error = answer.get("error")
        if error is None:
            return None if "seq" in answer else "bad_reply"
        if isinstance(error, dict) and error.get("err_code") == WRONG_LAST_SEQUENCE:
            return REPLAYED
        return "jetstream_error"  # no leader, storage full, ...

    def _note(self, reason: str, action: str) -> None:
        self.unavailable[reason] = self.unavailable.get(reason, 0) + 1
        if self.on_unavailable is not None:
            self.on_unavailable(reason, action)
        self._warning.note("the %s nonce ledger did not answer (%s): %s; %d times since the "
                           "last note", self.region, reason,
                           "signed requests are refused with 503" if action == "refused" else
                           "assertions are taken on this host's replay table alone")
