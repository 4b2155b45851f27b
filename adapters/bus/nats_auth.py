"""Least-privilege NATS: one NKey identity per region and role, each allowed only its subjects.

A region's processes connect as one of four roles, each with its own Ed25519 NKey (the server
holds only public keys) and its own inbox prefix (``_INBOX_<region>_<role>``), so no role reads
another's replies:

- ``gate`` (the inline proxy, ext_proc): publishes request signals and content, asks
  ``classify``, follows the enforcement stream and the policy board, takes caller-assertion
  nonces in its region's ledger (``nonce_bucket``: a create by publish, nothing else: it cannot
  read, list or watch the ledger), and writes and reads by key its region's batch ledger
  (``batch_bucket``: sealed metadata of the batches it admitted). It can neither publish an
  enforcement command nor answer ``classify``.
- ``node`` (account actors): consumes its region's inputs, publishes enforcement commands, the
  score signals an account's decision forwards to a prompt's history (signed with the region's
  producer key, as every input is) and dead letters, holds partition leases and asks and
  answers its peers' presence (``leases.presence_subject``; answers only to those who asked),
  provisions the region's streams and buckets (the nonce ledger's included).
- ``classifier``: consumes content, answers ``classify`` (responses only to those who asked),
  publishes score signals and dead letters.
- ``operator`` (``safeguards ops``): publishes operator signals, reads the policy board.

No role may touch another region's subjects, streams or buckets, or any JetStream API beyond
the operations it needs on its own streams (no stream deletion, no purge, for anyone). With home
routing (``core.homes``), the one exception: a region's gate and classifier may publish request
metadata and scores on a peer's input subjects, and its gate may read, by key, a peer's
directory entry and last enforcement command of an account it names; content, enforcement,
classify and every subscription stay regional. Every region's gates and operators write and
watch one global bucket, the home register (``bus.home_claims``: first-use claims, notices of
moves; digest keys, no text).

Identities: ``SAFEGUARDS_NATS_NKEY_<REGION>_<ROLE>`` (the seed) where set, else the file
``<state>/nats-<region>-<role>.nk`` where it exists; with neither, the connection is anonymous
(a server without authorization, as in development against a shared server). The embedded
default makes every seed on first use and starts its nats-server with the matching
``authorization`` block (:func:`server_authorization`), so nothing there connects without one;
``safeguards ops nats-authorization`` prints that block for a server run elsewhere.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import nkeys

from safeguards.adapters.bus.batch_bucket import batch_bucket_name
from safeguards.adapters.bus.cross_signals import GLOBAL_BUCKET
from safeguards.adapters.bus.home_claims import CLAIMS_BUCKET
from safeguards.adapters.bus.homes import home_bucket_name
from safeguards.adapters.bus.leases import lease_bucket_name
from safeguards.adapters.bus.nonce_bucket import nonce_bucket_name
from safeguards.adapters.bus.policy_board import policy_bucket_name
from safeguards.adapters.keyfiles import read_or_make, state_dir
from safeguards.core.ids import validate_region
from safeguards.core.subjects import stream_name


class NatsRole(StrEnum):
    GATE = "gate"
    NODE = "node"
    CLASSIFIER = "classifier"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class NatsIdentity:
    region: str
    role: NatsRole
    seed: str  # the NKey seed ("SU..."): a secret, never logged

    @property
    def public_key(self) -> str:
        return str(nkeys.from_seed(bytearray(self.seed.encode())).public_key.decode())

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.region, self.role)

    def __repr__(self) -> str:  # the seed stays out of logs and tracebacks
        return f"NatsIdentity({self.region!r}, {self.role.value!r}, {self.public_key})"


def inbox_prefix(region: str, role: NatsRole) -> str:
    return f"_INBOX_{validate_region(region)}_{role.value}"


def new_seed() -> str:
    return str(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode())


def _seed_path(region: str, role: NatsRole, directory: Path | None) -> Path:
    return state_dir(directory) / f"nats-{validate_region(region)}-{role.value}.nk"


def nats_identity(region: str, role: NatsRole, *,
                  directory: Path | None = None) -> NatsIdentity | None:
    """This process's identity as ``role`` of ``region``, or None (connect anonymously)."""
    seed = os.environ.get(f"SAFEGUARDS_NATS_NKEY_{region.upper()}_{role.value.upper()}")
    if not seed:
        path = _seed_path(region, role, directory)
        if not path.exists():
            return None
        seed = path.read_text().strip()
    identity = NatsIdentity(validate_region(region), role, seed.strip())
    identity.public_key  # noqa: B018 - a damaged seed fails here, not at connect time
    return identity


def make_identities(regions: tuple[str, ...], *,
                    directory: Path | None = None) -> list[NatsIdentity]:
    """Every role's identity for ``regions``: from the environment or the state folder, where
    missing made there (mode 0600) on first use."""
    out = []
    for region in regions:
        for role in NatsRole:
            found = nats_identity(region, role, directory=directory)
            if found is None:
                path = _seed_path(region, role, directory)
                seed = read_or_make(path, new_seed() + "\n", f"NATS {role.value} key of {region}")
                found = NatsIdentity(validate_region(region), role, seed)
            out.append(found)
    return out


# --- what each role may do --------------------------------------------------------------------

def _stream_info(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.INFO.{stream}"]


def _stream_admin(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}",
            *_stream_info(stream)]


def _consume(stream: str) -> list[str]:
    """Consumers on ``stream``: create (every API form), inspect, delete one's own, pull, ack,
    answer flow control."""
    api = "$JS.API.CONSUMER"
    return [f"{api}.CREATE.{stream}", f"{api}.CREATE.{stream}.>",
            f"{api}.DURABLE.CREATE.{stream}.>", f"{api}.INFO.{stream}.>",
            f"{api}.DELETE.{stream}.>", f"{api}.MSG.NEXT.{stream}.>",
            f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]


def _get(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>"]


def _kv_read(bucket: str) -> list[str]:
    return [*_stream_info(f"KV_{bucket}"), *_get(f"KV_{bucket}"), *_consume(f"KV_{bucket}")]


def _home_register() -> list[str]:
    """The global home register (``bus.home_claims``): written (a gate's create, an operator's
    move), read by key and watched; keys are digests, values a region and a partition count."""
    return [f"$KV.{CLAIMS_BUCKET}.>", *_stream_admin(f"KV_{CLAIMS_BUCKET}"),
            *_kv_read(CLAIMS_BUCKET)]


def _home_forwarding(role: NatsRole, peers: tuple[str, ...]) -> list[str]:
    """What a serving region's role may do at its peers, for the accounts homed there
    (``core.homes``): the gate and the classifier publish request metadata and scores to the
    home's input subjects (never content, enforcement or classify); the gate reads, by key
    only, the home's directory entry and the last enforcement command of an account it names
    (direct gets: no listing, no consumer, no subscription)."""
    out: list[str] = []
    for p in peers:
        if role in (NatsRole.GATE, NatsRole.CLASSIFIER):
            out.append(f"sg.{p}.acct.>")
        if role is NatsRole.GATE:
            homes, enforce = home_bucket_name(p), stream_name(p, "ENFORCE")
            out += [f"$JS.API.DIRECT.GET.KV_{homes}.$KV.{homes}.>",
                    f"$JS.API.DIRECT.GET.{enforce}.sg.{p}.enforce.>"]
    return out


def role_permissions(region: str, role: NatsRole, peers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The nats-server ``permissions`` of ``role`` in ``region``: allow lists only (everything
    else is denied). ``peers``: the regions whose accounts this region's gates may serve
    (home routing, :func:`_home_forwarding`)."""
    r = validate_region(region)
    inputs, content, enforce, dlq = (stream_name(r, k)
                                     for k in ("INPUTS", "CONTENT", "ENFORCE", "DLQ"))
    leases, policy, homes = lease_bucket_name(r), policy_bucket_name(r), home_bucket_name(r)
    nonces, batches = nonce_bucket_name(r), batch_bucket_name(r)
    publish: list[str] = ["$JS.API.INFO"]
    subscribe: list[str] = [f"{inbox_prefix(r, role)}.>"]
    responses = False
    if role is NatsRole.GATE:
        publish += [f"sg.{r}.acct.>", f"sg.{r}.content.>", f"sg.{r}.classify",
                    *_stream_info(inputs), *_stream_info(content), *_stream_info(enforce),
                    *_consume(enforce), *_kv_read(policy),
                    # the region's nonce ledger: creates only (the reply comes to its inbox)
                    f"$KV.{nonces}.*",
                    # the region's batch ledger: records written and read by key (direct gets)
                    f"$KV.{batches}.*", f"$JS.API.DIRECT.GET.KV_{batches}.$KV.{batches}.*",
                    # its region's directory: claims on first use (KV create)
                    f"$KV.{homes}.>", *_stream_admin(f"KV_{homes}"), *_kv_read(homes),
                    # the global home register: first-use claims (creates), moves watched
                    *_home_register()]
    elif role is NatsRole.NODE:
        publish += [f"sg.{r}.enforce.>", f"sg.{r}.acct.>", f"sg.{r}.dlq.>", f"$KV.{leases}.>",
                    f"$KV.{policy}.>"]
        for stream in (inputs, content, enforce, dlq, f"KV_{leases}", f"KV_{policy}",
                       f"KV_{nonces}", f"KV_{batches}"):
            publish += _stream_admin(stream)
        # direct gets of the inputs: a partition whose consumer has no leader reads from any
        # replica meanwhile (``direct_reads``)
        publish += [*_consume(inputs), *_get(inputs), *_get(enforce), *_kv_read(leases),
                    *_kv_read(policy)]
        # presence: a peer whose process died is evicted from the leases at once (``ownership``)
        publish += [f"sg.{r}.presence.*"]
        subscribe += [f"sg.{r}.presence.*"]
        responses = True
    elif role is NatsRole.CLASSIFIER:
        publish += [f"sg.{r}.acct.>", f"sg.{r}.dlq.>", *_stream_info(inputs),
                    *_stream_info(content), *_stream_info(dlq), *_consume(content)]
        subscribe += [f"sg.{r}.classify"]
        responses = True  # answers go to the asker's reply subject, nowhere else
    else:  # operator
        publish += [f"sg.{r}.acct.>", *_stream_info(inputs), *_kv_read(policy),
                    # the console's health page: dead letters and the enforcement stream's head
                    *_stream_info(dlq), *_stream_info(enforce),
                    # ``ops timeline``: the dead letters of a window, read by sequence
                    *_get(dlq),
                    # ``ops gates verify``: each account's last command, read by subject
                    *_get(enforce),
                    # onboarding and migrations write the region's directory
                    f"$KV.{homes}.>", *_stream_admin(f"KV_{homes}"), *_kv_read(homes),
                    # and note the move or onboarding in the global home register
                    *_home_register()]
    publish += _home_forwarding(role, tuple(p for p in peers if p != r))
    if role is NatsRole.CLASSIFIER:  # cross-region aggregates under its own region's keys
        publish += [f"$KV.{GLOBAL_BUCKET}.{r}.>", *_stream_admin(f"KV_{GLOBAL_BUCKET}")]
    elif role is NatsRole.GATE:  # and every region's, read
        publish += _kv_read(GLOBAL_BUCKET)
    permissions: dict[str, Any] = {"publish": {"allow": sorted(set(publish))},
                                   "subscribe": {"allow": sorted(set(subscribe))}}
    if responses:
        permissions["allow_responses"] = {"max": 1, "expires": "30s"}
    return permissions


def server_authorization(identities: list[NatsIdentity], *,
                         home_routing: bool = False) -> dict[str, Any]:
    """The nats-server ``authorization`` block admitting exactly these identities, each with
    its role's permissions (public keys only: no secret in the server's configuration).
    ``home_routing``: each region may serve the other regions' accounts (``core.homes``)."""
    regions = tuple(sorted({i.region for i in identities})) if home_routing else ()
    return {"users": [{"nkey": i.public_key,
                       "permissions": role_permissions(i.region, i.role, regions)}
                      for i in identities]}
