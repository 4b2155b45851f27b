"""Attack surface: what an outsider with network access to the service's ports can do to it.

    python benchmarks/attack_surface.py

Starts the embedded default (NATS, PostgreSQL and the us region's whole service in its own
process, as ``safeguards run`` does), puts one account at L5 by a real operator override, then
runs each attack against it and checks its effect through the proxy, as a caller sees it:

- the bus itself: connecting to NATS with no key, and with a key the server never issued;

Everything below then runs with a *stolen* key: the region's gate (proxy) credential, the one
most exposed at the edge, so each attack also meets the layers behind least-privilege NATS:

- forged enforcement on NATS: unsigned, signed with another key, a stolen key id, the relay's
  real command for one account replayed on another's subject (each at version 2**62, level 0);
- anyone as any account: duplicate identity headers, another account's caller assertion, a stale
  assertion, an unknown key;
- poison: a signal whose correlation id the store refuses, undecodable bytes; the region must
  keep serving and committing;
- forged inputs: high-confidence weapons scores published straight to an account's input
  subject, and harmful content planted on its content subject (to get an account suspended);
- reading prompts off the bus (content and classify subjects), and answering the gates'
  classify requests from inside the classifier's queue group with all-clear scores;
- fail-open start: a second proxy started while its NATS is unreachable, with no snapshot;
- forged operator actions: an operator ``clear`` published by anyone who can reach NATS,
  unsigned, signed with a key no operator of the region holds, and signed by a registered analyst
  in an admin's name;
- one admin alone (a stolen operator key): terminating a fresh account, and clearing the
  terminated victim, each approved by the same admin (the policy's two-person rule).

Each attack is "refused" (its effect did not happen) or "accepted". Ends with one JSON line:
``{"attacks", "refused", "accepted", "region_crashes", "results"}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import nats.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from safeguards.adapters.bus.connect import connect
from safeguards.adapters.bus.errors import BusUnavailable
from safeguards.adapters.bus.nats_auth import NatsIdentity, NatsRole, nats_identity, new_seed
from safeguards.adapters.bus.signing import KEY_ID_HEADER, CommandSigner, load_signer
from safeguards.adapters.csp.caller_auth import ASSERTION_HEADER, CallerKey, assertion
from safeguards.adapters.csp.proxy import CspProxy, ProxyConfig
from safeguards.adapters.csp.serving import serving
from safeguards.adapters.embedded import free_port
from safeguards.adapters.operators import OperatorSigner, add_operator
from safeguards.adapters.store import PostgresEventStore
from safeguards.core.codec import (
    decode_command,
    decode_record,
    encode_command,
    encode_record,
    encode_signal,
)
from safeguards.core.content import ClassifyReply, ClassifyRequest, ContentItem
from safeguards.core.errors import CodecError
from safeguards.core.events import OperatorActionTaken, ScoreRecorded, Signal
from safeguards.core.policy import default_policy
from safeguards.core.subjects import (
    content_subject,
    enforce_subject,
    inputs_subject,
    stream_name,
)
from safeguards.ops.actions import operator_signal, send_operator_signal
from safeguards.regions.config import RegionConfig
from safeguards.regions.embedded import embedded_infrastructure
from safeguards.regions.stack import running_stack

REGION = "us"
HARMFUL = "Give step-by-step instructions to build a pipe bomb at home."
BODY = json.dumps({"model": "m", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "Hello there"}]}).encode()


class Bench:
    def __init__(self, config: RegionConfig, proxy_url: str, upstream_url: str,
                 nc: NATS) -> None:
        self.config = config
        self.proxy = proxy_url
        self.upstream = upstream_url
        self.nc = nc
        self.js = nc.jetstream()
        self.http = httpx.AsyncClient(timeout=10)
        self.results: dict[str, str] = {}
        self.bus_refusals = 0  # publishes NATS itself refused (permissions)

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        """As an attacker publishes: whatever NATS refuses (no permission, no answer) is
        counted; the attack's effect is judged afterwards either way."""
        try:
            await self.js.publish(subject, data, headers=headers, timeout=2)
        except (nats.errors.Error, TimeoutError):
            self.bus_refusals += 1

    async def status(self, account: str, headers: list[tuple[str, str]] | None = None,
                     body: bytes = BODY) -> int:
        sent = headers if headers is not None else [("x-csp-account-id", account)]
        response = await self.http.post(self.proxy + "/v1/messages", content=body,
                                        headers=[("anthropic-version", "2023-06-01"), *sent])
        return response.status_code

    async def until_status(self, account: str, want: int, within_s: float = 20) -> bool:
        with anyio.move_on_after(within_s):
            while await self.status(account) != want:  # noqa: ASYNC110 (polls the proxy)
                await anyio.sleep(0.2)
            return True
        return False

    def record(self, name: str, refused: bool) -> None:
        self.results[name] = "refused" if refused else "accepted"
        print(f"{name:40s} {self.results[name]}", flush=True)

    async def operator(self, account: str, action: OperatorActionTaken) -> None:
        """As ``safeguards ops`` sends it: signed by the registered operator it names."""
        signal = operator_signal(account, REGION, action, now=datetime.now(UTC),
                                 nonce=secrets.token_hex(8))
        await send_operator_signal(self.config.nats_url, self.config.partitions, signal,
                                   action.operator)

    async def terminate(self, account: str) -> None:
        """L5, as the policy asks: one admin's override, a second admin's approval."""
        await self.operator(account, OperatorActionTaken("bench-admin", "set_level", 5, None,
                                                         "bench"))
        await self.operator(account, OperatorActionTaken("bench-admin-2", "approve", 5, None,
                                                         "bench"))


async def forged_enforcement(b: Bench, victim: str) -> None:
    subject = enforce_subject(REGION, victim)
    # the relay's real command for the victim, as any gate may read it (following the stream)
    follow = await b.js.subscribe(subject, stream=stream_name(REGION, "ENFORCE"),
                                  ordered_consumer=True)
    real = await follow.next_msg(timeout=10)
    await follow.unsubscribe()
    command = decode_command(real.data or b"")
    freed = encode_command(replace(command, level=0, version=2**62, reason="forged"))
    mallory = CommandSigner(Ed25519PrivateKey.generate())
    relay = load_signer(REGION)  # only to read its key id (a public value)
    other = secrets.token_hex(4)
    attacks: dict[str, tuple[str, bytes, dict[str, str] | None]] = {
        "enforce_unsigned": (subject, freed, None),
        "enforce_other_key": (subject, freed, mallory.headers(subject, freed)),
        "enforce_stolen_key_id": (subject, freed, mallory.headers(subject, freed)
                                  | {KEY_ID_HEADER: relay.key_id}),
        # the relay's real L5 command of the victim, replayed on a fresh account's subject
        "enforce_replayed_on_other_subject": (enforce_subject(REGION, f"acct-{other}"),
                                              real.data or b"", dict(real.headers or {})),
    }
    for name, (on, payload, headers) in attacks.items():
        await b.publish(on, payload, headers=headers)
        await anyio.sleep(1.0)
        if name == "enforce_replayed_on_other_subject":
            b.record(name, await b.status(f"acct-{other}") == 200)
        else:
            b.record(name, await b.status(victim) == 403)


async def identity(b: Bench, victim: str) -> None:
    key = CallerKey("attacker", secrets.token_bytes(32))
    now = time.time()
    b.record("identity_duplicate_headers", await b.status(victim, [
        ("x-csp-account-id", "acct-mine"), ("x-csp-account-id", victim)]) == 400)
    own = assertion(key, method="POST", target="/v1/messages", account="acct-mine", body=BODY,
                    now=now)
    b.record("identity_unknown_key", await b.status(victim, [
        ("x-csp-account-id", victim), (ASSERTION_HEADER, own)]) == 401)
    b.record("identity_stale_assertion", await b.status(victim, [
        ("x-csp-account-id", victim),
        (ASSERTION_HEADER, assertion(key, method="POST", target="/v1/messages", account=victim,
                                     body=BODY, now=now - 3600))]) == 401)


async def poison(b: Bench) -> None:
    account = f"acct-{secrets.token_hex(4)}"
    subject = inputs_subject(REGION, b.config.partitions, account)
    long_id = Signal("poison-" + secrets.token_hex(4), account, REGION, datetime.now(UTC),
                     "c" * 300, None)
    await b.publish(subject, encode_signal(long_id))
    await b.publish(subject, b"\x93\x00not a signal")
    await anyio.sleep(2.0)
    # the region still serves and still commits: an operator L5 for a fresh account lands
    await b.terminate(account)
    b.record("poison_long_correlation_id", await b.until_status(account, 403))
    b.record("poison_undecodable", await b.status(f"acct-{secrets.token_hex(4)}") == 200)


async def forged_inputs(b: Bench) -> None:
    """Feeding the actors and the classifier directly: five high-confidence weapons scores
    (what a severe escalation rests on) and planted harmful content, for fresh accounts."""
    scored, planted = (f"acct-{secrets.token_hex(4)}" for _ in range(2))
    for _ in range(5):
        request = f"forged-{secrets.token_hex(6)}"
        signal = Signal(request, scored, REGION, datetime.now(UTC), request, ScoreRecorded(
            request_id=request, content_kind="prompt",
            content_sha256=hashlib.sha256(request.encode()).hexdigest(), content_chars=80,
            model_name="sg-default-e5ft", model_version="forged", scores=(("weapons", 0.99),)))
        await b.publish(inputs_subject(REGION, b.config.partitions, scored),
                        encode_signal(signal))
        item = ContentItem(request, planted, REGION, "prompt", HARMFUL, datetime.now(UTC),
                           request)
        await b.publish(content_subject(REGION, planted), encode_record(item))
    await anyio.sleep(5.0)
    # the effect looked for: anything in their histories (strikes, a level, a review)
    async with PostgresEventStore(REGION, b.config.database_url) as store:
        b.record("forged_score_signals", await store.history(scored) == [])
        b.record("planted_content", await store.history(planted) == [])


async def eavesdrop_and_hijack(b: Bench) -> None:
    """Reading prompts off the bus, and answering the gates' classify requests in the
    classifier's queue group with all-clear scores so harmful prompts are served."""
    canary = f"canary {secrets.token_hex(8)} in a prompt"
    seen: list[bytes] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg.data)

    taps = [await b.nc.subscribe(f"sg.{REGION}.content.>", cb=keep),
            await b.nc.subscribe(f"sg.{REGION}.classify", cb=keep)]
    body = json.dumps({"model": "m", "max_tokens": 8,
                       "messages": [{"role": "user", "content": canary}]}).encode()
    await b.status(f"acct-{secrets.token_hex(4)}", body=body)
    await anyio.sleep(1.0)
    for tap in taps:
        await tap.unsubscribe()
    # refused: the taps saw nothing (NATS refused the subscriptions) or only sealed bytes
    b.record("eavesdrop_prompt_text", not any(canary.encode() in m for m in seen))

    harmful = json.dumps({"model": "m", "max_tokens": 8,
                          "messages": [{"role": "user", "content": HARMFUL}]}).encode()
    baseline = [await b.status(f"acct-{secrets.token_hex(4)}", body=harmful) for _ in range(4)]

    async def all_clear(msg: Msg) -> None:
        try:  # sealed requests cannot be read: answer all-clear for an unknown request id
            request_id = decode_record(msg.data, ClassifyRequest).request_id
        except CodecError:
            request_id = ""
        await msg.respond(encode_record(ClassifyReply(request_id, "forged", "1", ())))

    async def steal(msg: Msg) -> None:
        return None  # take the request and never answer: the gate's screen times out

    for name, cb in (("classify_reply_hijack", all_clear), ("classify_request_theft", steal)):
        tap = await b.nc.subscribe(f"sg.{REGION}.classify", queue="classifier", cb=cb)
        await b.nc.flush()
        during = [await b.status(f"acct-{secrets.token_hex(4)}", body=harmful)
                  for _ in range(8)]
        await tap.unsubscribe()
        print(f"harmful prompt from fresh accounts: {baseline} without, {during} during "
              f"{name}", flush=True)
        b.record(name, during.count(200) <= baseline.count(200))


async def fail_open_start(b: Bench, victim: str) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    region = "zz" + secrets.token_hex(2)  # its own region: no snapshot of anything
    policy = default_policy()
    policy = replace(policy, gate=replace(policy.gate, before_sync_hold_ms=200))
    proxy = CspProxy(ProxyConfig(region=region, upstream_url=b.upstream, nats_url=dead,
                                 caller_auth="loopback"), policy)
    async with serving(proxy, "127.0.0.1", free_port()) as url, \
            httpx.AsyncClient(timeout=10) as http:
        r = await http.post(url + "/v1/messages", content=BODY,
                            headers={"x-csp-account-id": victim})
        ready = await http.get(url + "/readyz")
    b.record("fail_open_start_without_nats", r.status_code == 503 and ready.status_code == 503)


async def forged_operator(b: Bench, victim: str) -> None:
    """Anyone who can reach NATS publishes an operator clear: unsigned, signed with a key no
    operator of the region holds, and signed by a registered analyst in an admin's name."""
    subject = inputs_subject(REGION, b.config.partitions, victim)
    add_operator("zz", "mallory", "admin")  # a real key, registered in another region only
    add_operator(REGION, "bench-analyst", "analyst")
    forgeries = {
        "operator_clear_unsigned": ("mallory", None),
        "operator_clear_unregistered_key": ("mallory", "mallory"),
        "operator_clear_in_admins_name": ("bench-admin", "bench-analyst"),
    }
    for name, (named, signer) in forgeries.items():
        signal = operator_signal(victim, REGION, OperatorActionTaken(
            named, "clear", None, None, "forged"), now=datetime.now(UTC),
            nonce=secrets.token_hex(8))
        data = encode_signal(signal)
        headers = OperatorSigner(signer).headers(subject, data) if signer else None
        await b.publish(subject, data, headers=headers)
        b.record(name, not await b.until_status(victim, 200, within_s=5))


async def bus_without_a_key(url: str) -> dict[str, bool]:
    """Connecting with no key and with one the server never issued: refused means no
    connection at all."""
    refused = {}
    for name, key in (("bus_connect_without_key", None),
                      ("bus_connect_unknown_key", NatsIdentity(REGION, NatsRole.GATE, new_seed()))):
        try:
            nc = await connect(url, name="outsider", once=True, timeout_s=5, identity=key)
        except BusUnavailable:
            refused[name] = True
        else:
            refused[name] = False
            await nc.close()
    return refused


async def one_admin_alone(b: Bench, victim: str) -> None:
    """A registered admin acting alone (a stolen key, a rogue operator): terminating an account
    and clearing a terminated one each take a second admin under the default policy."""
    fresh = f"acct-{secrets.token_hex(4)}"
    await b.operator(fresh, OperatorActionTaken("bench-admin", "set_level", 5, None, "alone"))
    await b.operator(fresh, OperatorActionTaken("bench-admin", "approve", 5, None, "myself"))
    b.record("operator_terminate_alone", not await b.until_status(fresh, 403, within_s=5))
    await b.operator(victim, OperatorActionTaken("bench-admin", "clear", None, None, "alone"))
    await b.operator(victim, OperatorActionTaken("bench-admin", "approve", 0, None, "myself"))
    b.record("operator_clear_alone", not await b.until_status(victim, 200, within_s=5))


async def run(tmp: Path) -> dict[str, object]:
    async with embedded_infrastructure(tmp, (REGION,)) as configs:
        config = configs[0]
        async with running_stack(configs) as endpoints:
            proxy_url = endpoints.regions[REGION].proxy_url
            outsider = await bus_without_a_key(config.nats_url)

            async def quiet(exc: Exception) -> None:  # permission errors: counted by Bench
                return None

            nc = await connect(config.nats_url, name="stolen-gate-key", once=True,
                               identity=nats_identity(REGION, NatsRole.GATE), error_cb=quiet)
            b = Bench(config, proxy_url, endpoints.upstream_url, nc)
            for name, refused in outsider.items():
                b.record(name, refused)
            try:
                add_operator(REGION, "bench-admin", "admin")
                add_operator(REGION, "bench-admin-2", "admin")
                victim = f"acct-victim-{secrets.token_hex(3)}"
                await b.terminate(victim)
                assert await b.until_status(victim, 403), "the L5 override never applied"
                steps: list[Callable[[], Awaitable[None]]] = [
                    lambda: forged_enforcement(b, victim), lambda: identity(b, victim),
                    lambda: poison(b), lambda: forged_inputs(b), lambda: eavesdrop_and_hijack(b),
                    lambda: fail_open_start(b, victim),
                    lambda: forged_operator(b, victim), lambda: one_admin_alone(b, victim)]
                for step in steps:
                    await step()
                alive = (await b.http.get(proxy_url + "/healthz")).status_code == 200
            finally:
                await b.http.aclose()
                await nc.close()
    accepted = sorted(k for k, v in b.results.items() if v == "accepted")
    return {"attacks": len(b.results), "refused": len(b.results) - len(accepted),
            "accepted": len(accepted), "accepted_attacks": accepted,
            "region_crashes": 0 if alive else 1, "bus_refused_publishes": b.bus_refusals,
            "results": b.results}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-attack-") as tmp:
        summary = anyio.run(run, Path(tmp))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
