"""Residency you can test: what one region's credentials and stores can do to another region.

    python benchmarks/residency.py

Starts the embedded default's parts for two regions (``us`` and ``eu``): a nats-server that
admits only the regions' role identities (``bus.nats_auth``) plus an auditor that may only
listen, a PostgreSQL database per region, and each region's whole service. Then:

- ``cross_region_publish_refused`` / ``_subscribe_refused``: every us role (gate, node,
  classifier, operator) publishes to, and subscribes on, every eu subject family (inputs,
  content, enforcement, classify, dead letters, policy and lease buckets, the JetStream API of
  eu's streams); each refusal by the server counted against the attempts;
- ``foreign_writes_refused``: a us store opened on eu's database (append and read), and an eu
  event appended through a us store;
- ``cross_region_db_connect_refused``: each region's processes connect as its own PostgreSQL
  role (``store.region_roles``, ``scram-sha-256`` on the embedded servers); for each region, its
  credential is tried on the other's database on the other's server and on a server holding both
  regions' databases (us's, where eu is provisioned too), the other's role with this region's
  password, and a node's start (``migrate``) on the other's database, which must end in the typed
  ``CredentialRefused``; each refusal counted against the attempts;
- ``canary_leaks``: prompts carrying a canary through the us proxy, from us accounts and from
  accounts homed in eu (their scores go to eu, home routing); every message the auditor
  sees on eu subjects, and every event and dead letter in eu's database, is searched for it (a
  leak is any hit). ``canary_in_us_store`` and ``canary_on_us_bus`` say whether raw text
  reached us's own store or bus in the clear (content on the bus is sealed);
- ``hopper_harmful_served``: the region-hopper persona (each account alternating request by
  request between the us and eu proxies) run against the stack with home routing: harmful
  completions served before L3, scored against the one history each account has in its home
  (``hopper_histories``: how many regions keep one, per account; where several did, each
  region's requests would be scored against that region's own enforcement and added up);
  ``..._without_home_routing``: the same persona on fresh accounts, same run, on a stack whose
  regions each keep their own history (the baseline);
- ``erased_plaintext_found``: one us account sends requests naming an organisation, a project
  and an API key through the us proxy, and an operator note is added to its history; once the
  stack has stopped it is erased (``PostgresEventStore.erase``, what ``ops erase`` runs) and each
  of its personal field values (``core.erasure``: digests, ids, link keys, free text, read from
  its history before the erasure) is searched for, as plaintext bytes, in us's database: event
  bodies and ids, outbox payloads and subjects, snapshots, inbox keys, key rows, and the dead
  letters the auditor saw on us's bus. Each hit counts (``erased_values_searched`` says how many
  values were looked for, ``erased_plaintext_where`` where hits were). Stream keys are not
  searched: the account id stays, and an organisation's or API key's own history keeps its key.

Ends with one JSON line: ``{"cross_region_publish_refused", "cross_region_subscribe_refused",
"foreign_writes_refused", "cross_region_db_connect_refused", "canary_leaks",
"erased_plaintext_found", "hopper_harmful_served", ...}`` (each refusal figure as
"refused/attempted").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
from nats.aio.msg import Msg

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.nats_auth import (
    NatsIdentity,
    NatsRole,
    make_identities,
    new_seed,
    server_authorization,
)
from safeguards.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from safeguards.adapters.store import PostgresEventStore, migrate
from safeguards.adapters.store.errors import CredentialRefused
from safeguards.adapters.store.region_roles import (
    provision_region,
    region_password,
    region_url,
    with_region_password,
)
from safeguards.core.erasure import PERSONAL_FIELDS
from safeguards.core.errors import ResidencyViolation
from safeguards.core.events import OperatorActionTaken
from safeguards.core.ports import AppendRequest
from safeguards.regions.config import RegionConfig
from safeguards.regions.stack import region_stores, running_stack
from safeguards.simulations.personas import load_personas
from safeguards.simulations.session import SimulationResult, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from bus_support import refused_by_server
from store_events import make_event, make_request

HOME, OTHER = "us", "eu"
# eu's subject families, as a us process would have to name them to reach eu
TARGETS = (
    f"sg.{OTHER}.acct.1.t0", f"sg.{OTHER}.content.t0", f"sg.{OTHER}.enforce.t0",
    f"sg.{OTHER}.classify", f"sg.{OTHER}.dlq.x", f"$KV.sg_{OTHER}_policy.current",
    f"$KV.sg_{OTHER}_leases.p1", f"$JS.API.STREAM.INFO.SG_{OTHER.upper()}_INPUTS",
    f"$JS.API.CONSUMER.CREATE.SG_{OTHER.upper()}_ENFORCE",
    f"$JS.API.STREAM.MSG.GET.SG_{OTHER.upper()}_ENFORCE",
)
SUBSCRIPTIONS = (f"sg.{OTHER}.>", f"sg.{OTHER}.content.>", f"sg.{OTHER}.classify",
                 f"sg.{OTHER}.enforce.>", f"_INBOX_{OTHER}_gate.>", ">")


# Home routing (``core.homes``) lets a us gate and classifier publish request metadata and
# scores on eu's input subjects for accounts homed in eu (the eu nodes take only those kinds
# from them): not an attempt that must be refused for those two roles.
HOME_ROUTED = {NatsRole.GATE: {f"sg.{OTHER}.acct.1.t0"},
               NatsRole.CLASSIFIER: {f"sg.{OTHER}.acct.1.t0"}}


async def cross_region(url: str, identities: list[NatsIdentity]) -> dict[str, list[int]]:
    """[refused, attempted] for publishes and subscriptions of every us role on eu."""
    out = {"publish": [0, 0], "subscribe": [0, 0]}
    for identity in (i for i in identities if i.region == HOME):
        targets = [t for t in TARGETS if t not in HOME_ROUTED.get(identity.role, set())]
        refused = await refused_by_server(url, identity, publish=targets,
                                          subscribe=SUBSCRIPTIONS)
        out["publish"][0] += sum(kind == "publish" for kind, _ in refused)
        out["publish"][1] += len(targets)
        out["subscribe"][0] += sum(kind == "subscription" for kind, _ in refused)
        out["subscribe"][1] += len(SUBSCRIPTIONS)
    return out


async def foreign_writes(configs: dict[str, RegionConfig]) -> list[int]:
    refused = attempted = 0
    async with PostgresEventStore(HOME, configs[OTHER].database_url) as lost:
        for attempt in (lost.append(make_request("acct-x", HOME, 0, 1)), lost.history("acct-x")):
            attempted += 1
            try:
                await attempt
            except ResidencyViolation:
                refused += 1
    async with PostgresEventStore(HOME, configs[HOME].database_url) as home:
        attempted += 1
        try:
            await home.append(make_request("acct-y", OTHER, 0, 1))
        except ResidencyViolation:
            refused += 1
    return [refused, attempted]


async def cross_region_connects(servers: dict[str, str]) -> list[int]:
    """[refused, attempted]: each region's credential on the other's database (the other's
    server, and ``servers[HOME]``, where both regions have one), the other's role with this
    region's password, and a node's start there. ``servers``: region -> administrator's URL."""
    refused = attempted = 0

    async def refused_by(attempt: Any, *errors: type[BaseException]) -> None:
        nonlocal refused, attempted
        attempted += 1
        try:
            conn = await attempt
        except errors:
            refused += 1
        else:
            await conn.close()

    refusals = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidPasswordError,
                asyncpg.InvalidAuthorizationSpecificationError)
    for mine, theirs in ((HOME, OTHER), (OTHER, HOME)):
        for server in {servers[theirs], servers[HOME]}:
            await refused_by(asyncpg.connect(with_region_password(
                region_url(server, mine, f"safeguards_{theirs}"))), *refusals)
        wrong = region_url(servers[theirs], theirs).replace(
            "@", f":{region_password(mine)}@", 1)
        await refused_by(asyncpg.connect(wrong), *refusals)
        attempted += 1
        try:
            await migrate(region_url(servers[theirs], mine, f"safeguards_{theirs}"))
        except CredentialRefused:
            refused += 1
    return [refused, attempted]


async def _ask(http: httpx.AsyncClient, proxy: str, account: str, text: str) -> None:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    response = await http.post(proxy + "/v1/messages", json=body, headers={
        "anthropic-version": "2023-06-01", "x-csp-account-id": account})
    response.raise_for_status()


async def canary_through(proxies: dict[str, str], canary: str) -> None:
    """Canary prompts through the us proxy: from us accounts, and from accounts homed in eu
    (first used there with a plain prompt), whose scores go to eu and whose text must not."""
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(3):
            await _ask(http, proxies[OTHER], f"acct-canary-eu-{i}", "hello from home")
        for i in range(5):
            await _ask(http, proxies[HOME], f"acct-canary-{i}",
                       f"{canary} please summarise this note {i}")
        for i in range(3):
            await _ask(http, proxies[HOME], f"acct-canary-eu-{i}",
                       f"{canary} please summarise this note {i}")


async def histories_of(result: SimulationResult, stores: Any) -> list[int]:
    accounts = sorted({t.account for t in result.trace})
    return [sum([bool(await store.history(a)) for store in stores.values()]) for a in accounts]


async def found_in_database(url: str, canary: bytes) -> int:
    conn = await asyncpg.connect(with_region_password(url))  # as the region's role: its rows
    try:
        hits = 0
        for table, column in (("events", "body"), ("outbox", "payload"),
                              ("snapshots", "state")):
            hits += await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE position($1::bytea in {column}) > 0",
                canary)
        return int(hits)
    finally:
        await conn.close()


ERASED_ACCOUNT = "acct-erase-0"


async def erasable_traffic(proxy: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(4):
            body = {"model": "m", "max_tokens": 16, "messages": [
                {"role": "user", "content": f"plan the team offsite, day {i}"}]}
            response = await http.post(proxy + "/v1/messages", json=body, headers={
                "anthropic-version": "2023-06-01", "x-csp-account-id": ERASED_ACCOUNT,
                "x-csp-organization-id": "org-erase-4f1c", "x-csp-project-id": "proj-erase-9a",
                "x-csp-api-key-id": "key-erase-77b2"})
            response.raise_for_status()


async def erased_plaintext(url: str, dead_letters: list[bytes]) -> tuple[dict[str, int], int]:
    """(hits by where they were found, values searched) for the erased account's personal
    values after erasure."""
    async with PostgresEventStore(HOME, url) as store:
        history = await store.history(ERASED_ACCOUNT)
        note = make_event(ERASED_ACCOUNT, HOME, len(history) + 1, body=OperatorActionTaken(
            "bench-op", "note", None, None, "customer ticket 88213: asked about the offsite"))
        await store.append(AppendRequest(ERASED_ACCOUNT, len(history), (note,)))
        values = {str(getattr(e.body, name)) for e in [*history, note]
                  for name in PERSONAL_FIELDS.get(e.type, ())
                  if getattr(e.body, name, None) is not None}
        await store.erase(ERASED_ACCOUNT, "bench-op", datetime.now(UTC))
    conn = await asyncpg.connect(with_region_password(url))
    where: dict[str, int] = {}
    try:
        for value in sorted(values):
            needle = value.encode()
            for table, column in (("events", "body"), ("outbox", "payload"),
                                  ("snapshots", "state"), ("account_keys", "wrapped")):
                n = await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE position($1::bytea in {column}) > 0",
                    needle)
                where[f"{table}.{column}"] = where.get(f"{table}.{column}", 0) + n
            for table, column in (("events", "event_id"), ("events", "causation_id"),
                                  ("events", "correlation_id"), ("outbox", "subject"),
                                  ("inbox", "inbox_key")):
                n = await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE position($1 in {column}) > 0", value)
                where[f"{table}.{column}"] = where.get(f"{table}.{column}", 0) + n
            where["dead_letters"] = where.get("dead_letters", 0) + sum(
                needle in data for data in dead_letters)
    finally:
        await conn.close()
    return {k: v for k, v in where.items() if v}, len(values)


async def run(tmp: Path) -> dict[str, Any]:
    os.environ["SAFEGUARDS_STATE_DIR"] = str(tmp / "keys")
    identities = make_identities((HOME, OTHER))
    auditor = NatsIdentity(HOME, NatsRole.OPERATOR, new_seed())  # listens to everything
    authorization = server_authorization(identities, home_routing=True)  # as `run` does
    authorization["users"].append({"nkey": auditor.public_key, "permissions": {
        "publish": {"deny": [">"]}, "subscribe": {"allow": [">"]}}})
    canary = f"CANARY-{secrets.token_hex(8)}"
    seen: list[tuple[str, bytes]] = []
    with contextlib.ExitStack() as stack:
        nats = stack.enter_context(EmbeddedNats(tmp / "nats", authorization=authorization))
        configs, servers = {}, {}
        for region in (HOME, OTHER):  # as ``safeguards run`` does: a role of its own
            pg = stack.enter_context(EmbeddedPostgres(tmp / f"pg-{region}"))
            servers[region] = pg.url()
            configs[region] = RegionConfig(region, await provision_region(pg.url(), region),
                                           nats.url)
        await provision_region(servers[HOME], OTHER)  # us's server holds eu's database too
        db_connects = await cross_region_connects(servers)
        figures = await cross_region(nats.url, identities)
        async with running_stack(list(configs.values())) as endpoints:
            listener = await connect(nats.url, name="auditor", once=True,
                                     identity=NatsIdentity(HOME, NatsRole.OPERATOR,
                                                           auditor.seed))

            async def keep(msg: Msg) -> None:
                seen.append((msg.subject, msg.data))

            await listener.subscribe(">", cb=keep)
            await canary_through({r: e.proxy_url for r, e in endpoints.regions.items()},
                                 canary)
            await erasable_traffic(endpoints.regions[HOME].proxy_url)
            hopper = [p for p in load_personas() if p.name == "region_hopper"]
            async with region_stores(endpoints) as stores:
                result = await simulate(hopper, {r: e.proxy_url for r, e in
                                                 endpoints.regions.items()},
                                        dict(stores), run_id="residency", show_progress=False)
                hopper_histories = await histories_of(result, stores)
                eu_canary_homed = sum([bool(await stores[OTHER].history(f"acct-canary-eu-{i}"))
                                       and not await stores[HOME].history(f"acct-canary-eu-{i}")
                                       for i in range(3)])
            await listener.close()
        # The baseline, same run: the hopper again (fresh accounts) on a stack without home
        # routing, where each region keeps its own history of an account
        async with running_stack(list(configs.values()), home_routing=False) as endpoints, \
                region_stores(endpoints) as stores:
            split = await simulate(hopper, {r: e.proxy_url for r, e in endpoints.regions.items()},
                                   dict(stores), run_id="nohome", show_progress=False)
            split_histories = await histories_of(split, stores)
        writes = await foreign_writes(configs)
        erased_hits, erased_values = await erased_plaintext(
            configs[HOME].database_url,
            [data for subject, data in seen if subject.startswith(f"sg.{HOME}.dlq.")])
        token = canary.encode()
        leaks_bus = sum(token in data for subject, data in seen
                        if subject.startswith(f"sg.{OTHER}."))
        leaks_db = await found_in_database(configs[OTHER].database_url, token)
        in_us_store = await found_in_database(configs[HOME].database_url, token)
    return {
        "cross_region_publish_refused": "{}/{}".format(*figures["publish"]),
        "cross_region_subscribe_refused": "{}/{}".format(*figures["subscribe"]),
        "foreign_writes_refused": "{}/{}".format(*writes),
        "cross_region_db_connect_refused": "{}/{}".format(*db_connects),
        "canary_leaks": leaks_bus + leaks_db,
        "erased_plaintext_found": sum(erased_hits.values()),
        "hopper_harmful_served": result.personas[0].max_harmful_served,
        # per hopper account, how many regions keep a history of it (1: its home only)
        "hopper_histories": hopper_histories,
        "hopper_harmful_served_without_home_routing": split.personas[0].max_harmful_served,
        "hopper_histories_without_home_routing": split_histories,
        "hopper_requests_by_region": {r: sum(t.region == r for t in result.trace)
                                      for r in (HOME, OTHER)},
        "hopper_enforced_accounts": f"{result.personas[0].enforced_accounts}/"
                                    f"{result.personas[0].accounts}",
        # eu-homed accounts that sent the canary through the us proxy: history in eu only
        "eu_homed_canary_accounts_in_eu_only": f"{eu_canary_homed}/3",
        "canary_in_us_store": in_us_store,
        "canary_on_us_bus": sum(token in data for subject, data in seen
                                if subject.startswith(f"sg.{HOME}.")),
        "erased_values_searched": erased_values,
        "erased_plaintext_where": erased_hits,
        "messages_audited": len(seen),
        # the canary's own content messages, seen sealed (what makes "no canary" mean something)
        "us_content_messages_audited": sum(subject.startswith(f"sg.{HOME}.content.")
                                           for subject, _ in seen),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-residency-") as tmp:
        summary = anyio.run(run, Path(tmp))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
