"""Leases in a NATS KV bucket: revision-checked create/update with a bucket TTL.

A lease is a key whose value names its holder. ``acquire`` is a create (it succeeds only if the
key is absent, expired or deleted), ``renew`` and ``release`` are checked against the revision
the holder last wrote, so two holders can never both renew one key. A holder that stops renewing
loses the key when the bucket's TTL (its max age) removes it. This is JetStream's own
compare-and-set; nothing here votes or elects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from safeguards.adapters.bus.errors import BusUnavailable, ProvisioningConflict
from safeguards.adapters.bus.jetstream_retry import is_transient, retry_transient
from safeguards.adapters.bus.streams import PROVISION_DEADLINE_S, cluster_replicas
from safeguards.core.bus import Lease
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)

OP_TIMEOUT_S = 3.0
# a presence ask answered by nobody in this long is not taken for gone (``gone``): a stalled
# process, or its server paused or cut off behind a route that still carries the interest
PRESENCE_TIMEOUT_S = 0.25
_TRANSPORT = (TimeoutError, nats.errors.Error)


async def open_bucket(js: JetStreamContext, name: str, *, provision: bool = True,
                      **config: object) -> KeyValue:
    """The KV bucket ``name``, created with ``config`` if it does not exist yet (whoever creates
    it first wins; the others open it). Its replicas follow the servers, as the streams' do
    (``streams.cluster_replicas``: R3 on a cluster); a leader election is ridden through.

    ``provision``: this process may also raise an existing bucket made with fewer replicas (at
    R1 while the region ran on one server, now on a cluster), as ``ensure_stream`` raises a
    stream, and set an existing bucket's TTL to ``ttl`` where it was made with another (a changed
    ``lease_ttl_s``: the last opener's TTL holds); a role that may only read the bucket (a gate's
    policy board) passes False."""
    replicas = config.setdefault("replicas", cluster_replicas(js))
    ttl = config.get("ttl")

    async def once() -> KeyValue:
        try:
            kv = await js.key_value(name)
        except BucketNotFoundError:
            try:
                return await js.create_key_value(bucket=name, **config)  # type: ignore[arg-type]
            except APIError as exc:
                if is_transient(exc):
                    raise
                kv = await js.key_value(name)  # another process created it first
        if provision:
            await _reconcile(js, name, replicas if isinstance(replicas, int) else None,
                             float(ttl) if isinstance(ttl, int | float) else None)
        return kv

    try:
        return await retry_transient(once, f"opening KV bucket {name}",
                                     deadline_s=PROVISION_DEADLINE_S, attempt_s=OP_TIMEOUT_S * 2)
    except nats.errors.Error as exc:
        raise BusUnavailable(f"opening KV bucket {name}: {type(exc).__name__}") from None


async def _reconcile(js: JetStreamContext, name: str, replicas: int | None,
                     ttl: float | None) -> None:
    """Raise the bucket's stream to ``replicas`` if it has fewer (JetStream copies it to more
    servers; its keys and revisions stay; more are left alone: a server that is away must not
    shrink it), and set its TTL (max age) to ``ttl`` if it has another (the keys it holds expire
    by the new one)."""
    info = await js.stream_info(f"KV_{name}")
    have, had_ttl = info.config.num_replicas or 1, info.config.max_age or 0.0
    config = info.config
    if replicas is not None and have < replicas:
        config = dataclasses.replace(config, num_replicas=replicas)
    if ttl is not None and abs(had_ttl - ttl) > 1e-3:
        # as nats-py makes a bucket: duplicates are tracked for at most its TTL
        config = dataclasses.replace(config, max_age=ttl, duplicate_window=min(ttl, 120.0))
    if config is info.config:
        return
    try:
        await js.update_stream(config)
    except APIError as exc:
        if is_transient(exc):
            raise
        raise ProvisioningConflict(
            f"KV bucket {name} (R{have}, TTL {had_ttl:g} s) cannot be updated to "
            f"R{config.num_replicas}, TTL {config.max_age or 0.0:g} s: {exc.description}"
        ) from None
    if config.num_replicas != info.config.num_replicas:
        log.warning("KV bucket %s raised from R%d to R%d", name, have, replicas)
    if config.max_age != info.config.max_age:
        log.warning("KV bucket %s TTL changed from %g s to %g s", name, had_ttl, ttl)


def _last_sequence(exc: KeyWrongLastSequenceError) -> int | None:
    """The subject's last sequence a wrong-last-sequence refusal names ("wrong last sequence:
    N"), if it names one."""
    found = re.search(r"wrong last sequence: (\d+)", str(exc.description or ""))
    return int(found.group(1)) if found else None


def lease_bucket_name(region: str) -> str:
    return f"sg_{validate_region(region)}_leases"


def presence_subject(region: str, holder: str) -> str:
    """Where ``holder``'s process answers presence asks (any holder name, hex-encoded: a
    subject token must not hold dots or wildcards)."""
    return f"sg.{validate_region(region)}.presence.{holder.encode().hex()}"


class LeaseBucket:
    """The lease table (``core.bus.LeaseTable``) of a region in a NATS KV bucket."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str, *,
                 presence: tuple[Client, str] | None = None) -> None:
        self._kv = kv
        self._js = js
        # the connection and region presence is announced and asked through; without it
        # nobody is ever taken for gone
        self._presence = presence
        self._announced: dict[str, Subscription] = {}
        self._stream = f"KV_{bucket}"
        self._subjects = f"$KV.{bucket}."
        # Keys this process has held: a write whose answer was lost (a leader election cut the
        # reply off, the write itself went through) leaves such a key under our name at a
        # revision we never learnt. It is adopted instead of waiting out the TTL; a key under
        # our name that this process never held (another process with the same name) is not.
        self._held: set[tuple[str, str]] = set()

    @classmethod
    async def open(cls, js: JetStreamContext, region: str, ttl_s: float, *,
                   nc: Client | None = None) -> LeaseBucket:
        """``nc``: the connection ``js`` came from, for presence (``announce``, ``gone``)."""
        bucket = lease_bucket_name(region)
        return cls(await open_bucket(js, bucket, history=1, ttl=ttl_s,
                                     description="partition and node leases"), js, bucket,
                   presence=None if nc is None else (nc, region))

    async def acquire(self, key: str, holder: str) -> Lease | None:
        """The lease if ``key`` was free, None if someone holds it."""
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                rev = await self._kv.create(key, holder.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError, KeyDeletedError):
            # A race with another holder or with the TTL purge (nats-py's create reads the key
            # back after a wrong-sequence answer, and that read can find it gone): not ours.
            return await self._adopt(key, holder)
        except APIError as exc:
            if getattr(exc, "err_code", None) in (10071, 10164):
                return await self._adopt(key, holder)
            raise BusUnavailable(f"acquire {key}: {exc.description}") from None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"acquire {key}: {type(exc).__name__}") from None
        self._held.add((key, holder))
        return Lease(key, holder, rev)

    async def _adopt(self, key: str, holder: str) -> Lease | None:
        """The lease, if ``key`` is still under ``holder``'s name from an earlier write of this
        process whose answer was lost; None otherwise."""
        if (key, holder) not in self._held:
            return None
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                entry = await self._kv.get(key)
                if entry.value != holder.encode() or entry.revision is None:
                    return None
                try:
                    rev = await self._kv.update(key, holder.encode(), last=entry.revision)
                except KeyWrongLastSequenceError as exc:
                    # The read came from a replica that lags (KV reads are direct gets, any
                    # replica answers); the leader named its last revision: adopt that one if
                    # it, too, is ours.
                    latest = _last_sequence(exc)
                    if latest is None:
                        return None
                    entry = await self._kv.get(key, revision=latest)
                    if entry.value != holder.encode():
                        return None
                    rev = await self._kv.update(key, holder.encode(), last=latest)
        except (KeyWrongLastSequenceError, KeyNotFoundError, KeyDeletedError):
            return None
        except APIError as exc:
            if getattr(exc, "err_code", None) in (10071, 10164):
                return None
            raise BusUnavailable(f"adopt {key}: {exc.description}") from None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"adopt {key}: {type(exc).__name__}") from None
        return Lease(key, holder, rev)

    async def renew(self, lease: Lease) -> Lease | None:
        """The renewed lease, or None if it was lost (expired and maybe taken by another)."""
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                rev = await self._kv.update(lease.key, lease.holder.encode(), last=lease.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, KeyDeletedError):
            # A race with another holder or with the TTL purge (nats-py's create reads the key
            # back after a wrong-sequence answer, and that read can find it gone): not ours.
            return None
        except APIError as exc:
            if getattr(exc, "err_code", None) in (10071, 10164):
                return None
            raise BusUnavailable(f"renew {lease.key}: {exc.description}") from None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"renew {lease.key}: {type(exc).__name__}") from None
        return Lease(lease.key, lease.holder, rev)

    async def release(self, lease: Lease) -> None:
        """Delete the key if we still hold it, so the next holder need not wait for the TTL."""
        self._held.discard((lease.key, lease.holder))
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                await self._kv.delete(lease.key, last=lease.revision)
        except (KeyWrongLastSequenceError, APIError):
            return  # no longer ours: nothing to release
        except _TRANSPORT as exc:
            raise BusUnavailable(f"release {lease.key}: {type(exc).__name__}") from None

    async def holder(self, key: str) -> str | None:
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"read {key}: {type(exc).__name__}") from None
        return None if entry.value is None else entry.value.decode()

    async def holders(self, prefix: str | tuple[str, ...]) -> dict[str, str]:
        """Every live key under ``prefix`` (e.g. ``node.``, or any of several) with its holder:
        one listing, and one read per key that matches (not per partition lease). Both are
        answered by the bucket's stream leader, as a renewal is: no consumer, so no JetStream
        meta leader, which a server's return after a network partition can leave missing for
        seconds while the bucket takes renewals (``_keys``)."""
        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                out: dict[str, str] = {}
                for key in await self._keys():
                    if not key.startswith(prefix):
                        continue
                    try:
                        entry = await self._kv.get(key)
                    except (KeyNotFoundError, KeyDeletedError):
                        continue  # a delete marker, or purged since the listing
                    if entry.value is not None:
                        out[key] = entry.value.decode()
                return out
        except _TRANSPORT as exc:
            raise BusUnavailable(f"list {prefix}: {type(exc).__name__}") from None

    async def announce(self, holder: str) -> None:
        """Answer presence asks for ``holder`` through this connection: nats-py subscribes
        again after every reconnect, and the subscription dies with the process."""
        if self._presence is None or holder in self._announced:
            return
        nc, region = self._presence

        async def answer(msg: Msg) -> None:
            if msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await nc.publish(msg.reply, b"")

        try:
            self._announced[holder] = await nc.subscribe(presence_subject(region, holder),
                                                         cb=answer)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"announce {holder}: {type(exc).__name__}") from None

    async def gone(self, holder: str) -> bool:
        """True when the server says nobody listens for ``holder`` ("no responders": no
        connection of the cluster subscribes, so its process has none left); an answer, a
        timeout (a paused server or a stalled process: its interest stays) or a failure of our
        own connection is not gone."""
        if self._presence is None:
            return False
        nc, region = self._presence
        try:
            await nc.request(presence_subject(region, holder), b"",
                             timeout=PRESENCE_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            return True
        except _TRANSPORT:
            return False
        return False

    async def evict(self, holder: str) -> list[str]:
        """Delete every key whose value names ``holder`` (a dead process's), each checked
        against the revision read: one it renewed meanwhile, or another took, stays."""
        deleted: set[str] = set()
        failed: list[str] = []

        async def delete(key: str) -> None:
            try:
                if await self._delete_if(key, holder):
                    deleted.add(key)
            except APIError as exc:
                failed.append(str(exc.description))
            except nats.errors.Error as exc:
                failed.append(type(exc).__name__)

        try:
            with anyio.fail_after(OP_TIMEOUT_S):
                keys = await self._keys()
                async with anyio.create_task_group() as tg:  # at once: one round trip, not N
                    for key in keys:
                        tg.start_soon(delete, key)
        except APIError as exc:
            raise BusUnavailable(f"evict {holder}: {exc.description}") from None
        except _TRANSPORT as exc:
            raise BusUnavailable(f"evict {holder}: {type(exc).__name__}") from None
        if failed:  # what was deleted stays so; the next eviction tries the rest
            raise BusUnavailable(f"evict {holder}: {failed[0]}")
        return sorted(deleted)

    async def _delete_if(self, key: str, holder: str) -> bool:
        """Delete ``key`` if its newest revision names ``holder``."""
        try:
            entry = await self._kv.get(key)
            if entry.value != holder.encode() or entry.revision is None:
                return False
            try:
                await self._kv.delete(key, last=entry.revision)
            except KeyWrongLastSequenceError as exc:
                # renewed or taken since, or the read came from a replica that lags: the
                # leader named its last revision; deleted if that one is theirs too
                latest = _last_sequence(exc)
                if latest is None or (await self._kv.get(key, revision=latest)
                                      ).value != holder.encode():
                    return False
                await self._kv.delete(key, last=latest)
        except (KeyWrongLastSequenceError, KeyNotFoundError, KeyDeletedError):
            return False
        return True

    async def _keys(self) -> list[str]:
        """The bucket's keys, deleted ones included: the subjects its stream holds, from the
        stream's info (its leader answers; ``subjects_filter`` needs nats-server 2.8, which
        tests ran on 2.9 and 2.15). Where a server answers without them, the key listing of
        nats-py, whose ordered consumer needs the meta leader."""
        info = await self._js.stream_info(self._stream, subjects_filter=f"{self._subjects}>")
        if info.state.subjects is not None:
            return [s.removeprefix(self._subjects) for s in info.state.subjects]
        if not info.state.messages:
            return []
        try:
            # No server-side filter: nats-py matches filters by substring, and 2.9 ignores
            # them; the bucket holds tens of keys.
            return await self._kv.keys()
        except NoKeysError:
            return []
