"""Caller authentication: the provider's front door proves which account a request is from.

Each request carries a signed assertion in ``x-csp-caller-assertion``::

    v2 kid=<key id> ts=<unix seconds> nonce=<32 hex> sig=<64 hex: HMAC-SHA256>  (in this order)

over the scheme name ``sg-caller-v2``, the time, the nonce, the request's method, its target
(``signed_target``: the normalised path the route table matches, which holds Bedrock's model id
and Vertex's project, location and model, and the query string as sent), the account,
organisation, project and API-key id headers (empty when absent) and the sha256 of the body,
each field length-prefixed (``<bytes>:<field>\n``) so that no header value or path can pass for
a field boundary. An assertion names exactly one request: who, what route and model, and what
body, within ``MAX_SKEW_S`` of the gate's clock; its nonce is taken once in that window
(``replayed`` otherwise), in a fixed table (``shared_nonces``) that refuses
``replay_table_full`` when full: this process's own by default (sized for ``DEFAULT_MAX_RATE``),
one per proxy when its worker processes share it; then, where the gate has one, in the region's
ledger (``verify``, ``nonce_ledger``), so that no other host of the region takes it again.
The ledger's round trip need not hold the request up: ``begin`` checks everything here and
sends the ledger's take, and its ``PendingNonce`` is ``settle``d before any byte of an answer
goes to the caller (``settled_first``: the upstream call runs meanwhile and is aborted when the
ledger refuses, so nothing of its answer is delivered; the proxy's generating routes).
Keys are shared secrets by key id, so the front door can roll to a new key while the gate
trusts both. ``v1`` assertions (no method, path or nonce) are refused (``unsupported_scheme``):
every signer in this repository signs ``v2``.

Keys: ``SAFEGUARDS_CALLER_KEYS_<REGION>`` (``kid:hex,kid:hex``, each secret at least 32 bytes)
where set, else the state folder's ``caller-<region>.keys`` (``kid hex`` per line), made on
first use with one development key, which ``safeguards run`` prints with how a client signs.

Modes (``ProxyConfig.caller_auth``): ``required`` refuses any request without a valid assertion
(401); ``loopback`` (the embedded default, which listens on 127.0.0.1 only) also takes unsigned
requests from this machine, so that the front door and tools beside the proxy need no key, while
any other peer must sign. A present assertion is always checked: a bad one is refused anywhere.
Each refusal is counted by reason (``refused``, and ``on_refused`` for the metrics); its message
names the reason only, never the identity, the path or the body.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

from safeguards.adapters.csp.identity import API_KEY_HEADER, ORGANIZATION_HEADER, PROJECT_HEADER
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.routes import normalise_path, split_target
from safeguards.adapters.csp.shared_nonces import DEFAULT_MAX_RATE, SharedNonces, slots_for
from safeguards.adapters.csp.shared_nonces import MAX_SKEW_S as MAX_SKEW_S
from safeguards.adapters.csp.shared_nonces import REPLAY_TABLE_FULL as REPLAY_TABLE_FULL
from safeguards.adapters.csp.shared_nonces import REPLAYED as REPLAYED
from safeguards.adapters.keyfiles import shared_secrets
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)
ASSERTION_HEADER = "x-csp-caller-assertion"
SCHEME = "sg-caller-v2"
MODES = ("required", "loopback")
# the fields in this order, one space apart: anything else is malformed
_V2 = re.compile(r"v2 kid=([A-Za-z0-9-]+) ts=([0-9]{1,12}) nonce=([0-9a-f]{32}) "
                 r"sig=([0-9a-f]{64})")


class _Url(Protocol):
    @property
    def raw_path(self) -> bytes: ...


class _HttpRequest(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> _Url: ...
    @property
    def headers(self) -> MutableMapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


_Request = TypeVar("_Request", bound=_HttpRequest)
_Answer = TypeVar("_Answer")


@dataclass(frozen=True, slots=True)
class CallerKey:
    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if not self.key_id or not all(c.isascii() and (c.isalnum() or c == "-")
                                      for c in self.key_id):
            raise ValueError("a caller key id is letters, digits and '-'")
        if len(self.secret) < 32:
            raise ValueError(f"caller key {self.key_id}: the secret must hold at least 32 bytes")


@functools.lru_cache(maxsize=4096)
def signed_target(raw_target: str) -> str:
    """The target an assertion binds: the normalised path (as the route table matches it and the
    upstream is sent it) and the query string as sent. Spellings of one path sign alike, so a
    hop that normalises the path (Envoy) does not break a signature, and nothing else does."""
    path, query = split_target(raw_target)
    return normalise_path(path) + query


def signed_bytes(ts: int, nonce: str, method: str, target: str,
                 identity: tuple[str, str, str, str], body_digest: str) -> bytes:
    """What is signed: every field length-prefixed (its length in UTF-8 bytes), so distinct
    requests never sign alike."""
    items = (SCHEME, str(ts), nonce, method, target, *identity, body_digest)
    if all(item.isascii() for item in items):  # the usual case: one encoding, lengths in chars
        return "".join([f"{len(item)}:{item}\n" for item in items]).encode("ascii")
    encoded = [item.encode("utf-8", "surrogatepass") for item in items]
    return b"".join([b"%d:%b\n" % (len(data), data) for data in encoded])


def _mac(secret: bytes, signed: bytes) -> str:
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def assertion(key: CallerKey, *, method: str, target: str, account: str, body: bytes,
              now: float, organization: str = "", project: str = "", api_key_id: str = "",
              nonce: str | None = None) -> str:
    """The header value a front door sends with one request (``target``: the path and query
    string as sent, e.g. ``/model/<id>/invoke``)."""
    ts, nonce = int(now), nonce if nonce is not None else secrets.token_hex(16)
    signed = signed_bytes(ts, nonce, method, signed_target(target),
                          (account, organization, project, api_key_id),
                          hashlib.sha256(body).hexdigest())
    return f"v2 kid={key.key_id} ts={ts} nonce={nonce} sig={_mac(key.secret, signed)}"


_NONCE_REFUSALS = {REPLAYED: "the caller assertion was already used",
                   REPLAY_TABLE_FULL: "too many caller assertions in the window: try again later"}


class NonceLedger(Protocol):
    def take(self, ts: int, nonce: str, now: float) -> str | None:
        """None the first time ``nonce`` is seen in the window, else the refusal's reason."""


class RegionNonces(Protocol):
    async def take(self, secret: bytes, nonce: str) -> str | None:
        """None the first time the region sees ``nonce`` (of an assertion signed with
        ``secret``), else the refusal's reason; may raise BadRequest (``nonce_ledger``)."""


Proven = tuple[bytes, str]  # a checked assertion: its key's secret and its nonce


class CallerAuth:
    def __init__(self, keys: list[CallerKey], mode: str = "required",
                 account_header: str = "x-csp-account-id",
                 on_refused: Callable[[str], None] | None = None,
                 nonces: NonceLedger | None = None, ledger: RegionNonces | None = None
                 ) -> None:
        if mode not in MODES:
            raise ValueError(f"caller_auth must be one of {MODES}, got {mode!r}")
        self._keys = {k.key_id: k.secret for k in keys}
        self.mode = mode
        self.account_header = account_header.lower()
        self.refused: dict[str, int] = {}  # by reason
        self.on_refused = on_refused
        # this process's own table unless given one (the workers' shared table: serve_proxy)
        self.nonces: NonceLedger = nonces if nonces is not None else SharedNonces.in_process(
            slots_for(DEFAULT_MAX_RATE))
        self.ledger = ledger  # the region's, after the host's table (None: none)

    def check(self, identity: Mapping[str, str], value: str | None, body: bytes,
              peer: str | None, now: float, *, method: str, target: str) -> Proven | None:
        """Raise 401 unless the request is proven (or, in ``loopback`` mode, unsigned from this
        machine), its nonce taken in this host's table. ``identity``: the identity headers as
        sent (lower-case names); ``method`` and ``target``: the request line's (``:method`` and
        ``:path``, query string included). Returns what proved it (None: unsigned)."""
        if value is None:
            if self.mode == "loopback" and _is_loopback(peer):
                return None
            self._refuse("unsigned", f"missing {ASSERTION_HEADER} header")
        fields = _V2.fullmatch(value)
        if fields is None:
            if value.startswith("v1 "):
                self._refuse("unsupported_scheme", f"{ASSERTION_HEADER} must be a v2 assertion")
            self._refuse("malformed", f"malformed {ASSERTION_HEADER} header")
        key_id, ts_text, nonce, sig = fields.groups()
        secret = self._keys.get(key_id)
        if secret is None:
            self._refuse("unknown_key", "the caller assertion's key is not trusted")
        ts = int(ts_text)
        if abs(now - ts) > MAX_SKEW_S:
            self._refuse("expired", "the caller assertion is outside the accepted time window")
        signed = signed_bytes(ts, nonce, method, signed_target(target), (
            identity.get(self.account_header, ""), identity.get(ORGANIZATION_HEADER, ""),
            identity.get(PROJECT_HEADER, ""), identity.get(API_KEY_HEADER, "")),
            hashlib.sha256(body).hexdigest())
        if not hmac.compare_digest(_mac(secret, signed), sig):
            self._refuse("bad_signature", "the caller assertion does not match this request")
        refused = self.nonces.take(ts, nonce, now)
        if refused is not None:
            self._refuse(refused, _NONCE_REFUSALS[refused])
        return secret, nonce

    async def verify(self, identity: Mapping[str, str], value: str | None, body: bytes,
                     peer: str | None, now: float, *, method: str, target: str) -> None:
        """``check``, then the nonce taken in the region's ledger where there is one: a replay
        to another host of the region is ``replayed`` too (401); a ledger that cannot answer
        is the ledger's mode's to judge (503 when it is required)."""
        await settle(self.begin(identity, value, body, peer, now, method=method, target=target))

    def begin(self, identity: Mapping[str, str], value: str | None, body: bytes,
              peer: str | None, now: float, *, method: str, target: str) -> PendingNonce | None:
        """``verify`` with the ledger's answer still to come: ``check`` (raises as it does),
        then the ledger's take sent; None where there is nothing more to wait for (unsigned, or
        no ledger). The caller must ``settle`` it before anything of an answer is delivered."""
        proven = self.check(identity, value, body, peer, now, method=method, target=target)
        if proven is None or self.ledger is None:
            return None
        return PendingNonce(self, asyncio.ensure_future(self.ledger.take(*proven)))

    def _refuse(self, reason: str, message: str) -> NoReturn:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self.on_refused is not None:
            self.on_refused(reason)
        raise BadRequest(401, message)


class PendingNonce:
    """The region ledger's take of a checked assertion's nonce, on its way."""

    def __init__(self, auth: CallerAuth, take: asyncio.Future[str | None]) -> None:
        self._auth = auth
        self._take = take
        self._settling = False
        take.add_done_callback(self._unsettled)

    async def settle(self) -> None:
        """Return once the ledger took the nonce; raise 401 where it had been taken (as
        ``verify`` does) or the ledger's own refusal (503 when it is required and did not
        answer in its deadline)."""
        self._settling = True
        refused = await self._take
        if refused is not None:
            self._auth._refuse(refused, _NONCE_REFUSALS[refused])

    def _unsettled(self, take: asyncio.Future[str | None]) -> None:
        """An outcome nobody settles (the request was refused or cut off first) is read here:
        a 503 (the ledger counted and logged it) or, where the ledger failed in a way it does
        not expect, logged with its traceback."""
        failure = None if take.cancelled() else take.exception()
        if failure is not None and not self._settling and not isinstance(failure, BadRequest):
            log.error("the nonce ledger's take failed", exc_info=failure)


async def settle(pending: PendingNonce | None) -> None:
    if pending is not None:
        await pending.settle()


async def settled_first(pending: PendingNonce | None, call: Awaitable[_Answer],
                        close: Callable[[_Answer], Awaitable[None]]) -> _Answer:
    """``call``'s answer once ``pending`` has settled, ``call`` awaited meanwhile in this task
    (no task of its own: a proxy's request is written upstream in this turn of the loop, before
    the ledger's take, queued since ``begin``, is encoded and sent, and its answer is taken up
    without another hop). Where the ledger refuses first, ``call`` is cancelled; where it refuses
    after, the answer is ``close``d; either way the refusal is raised and nothing of the answer
    reaches the caller."""
    if pending is None:
        return await call
    task = asyncio.current_task()
    assert task is not None, "settled_first runs in a task"
    take = pending._take
    interrupted = False

    def refused(done: asyncio.Future[str | None]) -> None:
        nonlocal interrupted
        if done.cancelled() or done.exception() is not None or done.result() is not None:
            interrupted = True
            task.cancel()  # ``call`` ends where it waits: its connection closed, no answer

    take.add_done_callback(refused)
    try:
        answer = await call
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:  # the ledger's cancel, and no one else's
            await pending.settle()  # raises the refusal
        raise
    finally:
        take.remove_done_callback(refused)
    if interrupted:  # the cancel came as ``call`` finished, and it was swallowed there
        task.uncancel()
    try:
        await pending.settle()
    except BaseException:
        await close(answer)
        raise
    return answer


def one_assertion(values: list[str]) -> str | None:
    """The one assertion a request carries (None: unsigned); two are a 400."""
    if len(values) > 1:
        raise BadRequest(400, f"duplicate {ASSERTION_HEADER} header")
    return values[0] if values else None


def _is_loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ip_address(peer).is_loopback
    except ValueError:
        return False


def load_caller_keys(region: str, directory: Path | None = None) -> list[CallerKey]:
    region = validate_region(region)
    return [CallerKey(kid, secret) for kid, secret in shared_secrets(
        region, "caller", id_prefix="dev", directory=directory,
        what=f"the {region} region's development caller key")]


class SignedCaller:
    """An auth hook that names the caller and signs each request, for clients built on httpx or
    its successor httpx2 (both take a callable ``auth``): the ``anthropic`` SDK with
    ``http_client=<its httpx>.AsyncClient(auth=SignedCaller(key, "acct-1"))``."""

    def __init__(self, key: CallerKey, account: str, *, organization: str = "",
                 project: str = "", api_key_id: str = "",
                 account_header: str = "x-csp-account-id") -> None:
        self.key = key
        self.headers = {account_header: account, ORGANIZATION_HEADER: organization,
                        PROJECT_HEADER: project, API_KEY_HEADER: api_key_id}
        self.fields = {"account": account, "organization": organization, "project": project,
                       "api_key_id": api_key_id}

    def __call__(self, request: _Request) -> _Request:
        for name, value in self.headers.items():
            if value:
                request.headers[name] = value
        request.headers[ASSERTION_HEADER] = assertion(
            self.key, method=request.method, target=request.url.raw_path.decode("latin-1"),
            body=request.content, now=time.time(), **self.fields)
        return request
