"""The proxy's worker processes share one replay table: a caller assertion accepted by one worker
is refused as ``replayed`` by every other; the table is bounded, its entries expire with the
window, and when it is full it refuses new assertions (``replay_table_full``) rather than forget
one still inside the window."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path

import httpx
import pytest
from csp_testkit import Region
from hypothesis import given, settings
from hypothesis import strategies as st
from nonces_worker import check_all

from safeguards.adapters.csp.caller_auth import (
    ASSERTION_HEADER,
    MAX_SKEW_S,
    REPLAY_TABLE_FULL,
    REPLAYED,
    CallerAuth,
    CallerKey,
    assertion,
)
from safeguards.adapters.csp.messages_api import BadRequest
from safeguards.adapters.csp.shared_nonces import (
    BUCKET,
    DEFAULT_MAX_RATE,
    GRACE_S,
    SharedNonces,
    slots_for,
)
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port

KEY = CallerKey("door-1", bytes(range(32)))
NOW = 1_800_000_000.0
BODY = json.dumps({"model": "m", "max_tokens": 10,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


def _proof(now: float, nonce: str | None = None) -> str:
    return assertion(KEY, method="POST", target="/v1/messages", account="acct-1", body=BODY,
                     now=now, nonce=nonce)


def _refusal(auth: CallerAuth, proof: str, now: float) -> str | None:
    before = dict(auth.refused)
    try:
        auth.check({"x-csp-account-id": "acct-1"}, proof, BODY, "203.0.113.7", now,
                   method="POST", target="/v1/messages")
    except BadRequest as exc:
        assert exc.status == 401
        return next(r for r in auth.refused if auth.refused[r] != before.get(r, 0))
    return None


def test_the_table_is_sized_from_the_request_rate() -> None:
    assert slots_for(1000) == 602_048 and slots_for(1000) * 24 == 14_449_152  # 14.4 MB
    assert slots_for(0.001) == BUCKET
    with pytest.raises(ValueError):
        slots_for(0)


def test_a_full_table_fails_closed_across_processes() -> None:
    """Another process fills a one-bucket table; here the next assertion is refused as
    ``replay_table_full``, each of its nonces stays refused as ``replayed``, and once they have
    expired the slots serve again."""
    table = SharedNonces.create(slots=BUCKET, stripes=1)
    context = get_context("spawn")
    out = context.Queue()
    proofs = [_proof(NOW) for _ in range(BUCKET)]
    try:
        worker = context.Process(target=check_all,
                                 args=(table.handle(), KEY, proofs, BODY, NOW, out))
        worker.start()
        assert out.get(timeout=60) == {}  # every one taken there
        worker.join(10)
        assert table.live(NOW) == BUCKET
        auth = CallerAuth([KEY])
        auth.nonces = table
        assert _refusal(auth, _proof(NOW), NOW) == REPLAY_TABLE_FULL
        assert all(_refusal(auth, proof, NOW) == REPLAYED for proof in proofs)
        assert auth.refused == {REPLAY_TABLE_FULL: 1, REPLAYED: BUCKET} and table.full == 1
        # the last second an assertion signed at NOW is accepted, its nonce still holds
        edge = NOW + MAX_SKEW_S
        assert _refusal(auth, _proof(edge), edge) == REPLAY_TABLE_FULL
        later = NOW + MAX_SKEW_S + GRACE_S + 1
        assert _refusal(auth, _proof(later), later) is None
        assert table.live(later) == 1
    finally:
        table.close()


def test_a_single_process_gate_is_bounded_and_fails_closed_too() -> None:
    """Without workers the gate keeps the same table in its own memory, sized for the default
    rate: a one-bucket table refuses the next assertion as ``replay_table_full`` once full,
    still refuses every taken nonce as ``replayed``, and serves again once they expire."""
    assert isinstance(default := CallerAuth([KEY]).nonces, SharedNonces)
    assert default.slots == slots_for(DEFAULT_MAX_RATE)
    table = SharedNonces.in_process(BUCKET)
    try:
        auth = CallerAuth([KEY], nonces=table)
        proofs = [_proof(NOW) for _ in range(BUCKET)]
        assert [_refusal(auth, proof, NOW) for proof in proofs] == [None] * BUCKET
        assert table.live(NOW) == BUCKET
        assert _refusal(auth, _proof(NOW), NOW) == REPLAY_TABLE_FULL
        assert all(_refusal(auth, proof, NOW) == REPLAYED for proof in proofs)
        assert auth.refused == {REPLAY_TABLE_FULL: 1, REPLAYED: BUCKET} and table.full == 1
        with pytest.raises(ValueError):
            table.handle()  # private pages: no other process can attach
        later = NOW + MAX_SKEW_S + GRACE_S + 1
        assert _refusal(auth, _proof(later), later) is None
        assert table.live(later) == 1
    finally:
        table.close()


# one table for every example: each example starts long after the last one's end, when all of
# that one's entries have expired (so each starts from an empty table)
_EPOCH = itertools.count()


@pytest.fixture(scope="module")
def bucket() -> Iterator[SharedNonces]:
    table = SharedNonces.create(slots=BUCKET, stripes=1)
    yield table
    table.close()


# nonces of four quarters from three patterns: one slot's end and the next one's start often
# spell another nonce of the pool, which must not count as that nonce
_NONCES = ["".join(q) for q in itertools.product(["00" * 4, "01" * 4, "ff" * 4], repeat=4)]
# the clock's steps: none or small (a burst), the window's edges, anything
_STEPS = st.one_of(st.sampled_from([0.0, 0.25, 1.0]),
                   st.sampled_from([MAX_SKEW_S, MAX_SKEW_S + GRACE_S, MAX_SKEW_S + 1.5]),
                   st.floats(0, 2 * MAX_SKEW_S))


@settings(max_examples=200, deadline=None)
@given(st.permutations(_NONCES), st.integers(0, len(_NONCES)),
       st.lists(st.tuples(st.integers(0, 10_000), _STEPS,
                          st.sampled_from([0, -MAX_SKEW_S, MAX_SKEW_S]) |
                          st.integers(-MAX_SKEW_S, MAX_SKEW_S)), min_size=1, max_size=400))
def test_a_nonce_is_refused_exactly_while_its_window_lasts(
        bucket: SharedNonces, pool: list[str], burst: int,
        takes: list[tuple[int, float, int]]) -> None:
    """Against a model: a nonce is ``replayed`` while an assertion with its time could still be
    accepted (plus the grace second), taken again after; a bucket is full only when all its
    slots hold live nonces, and a full bucket never drops one."""
    now = 1_900_000_000.0 + next(_EPOCH) * 1_000_000
    model: dict[str, int] = {}  # nonce -> last second it holds
    for pick, step, skew in [(i, 0.0, 0) for i in range(burst)] + takes:  # a burst first
        nonce = pool[pick % len(pool)]
        now += step
        ts = int(now) + skew
        live = {n for n, until in model.items() if until >= now}
        expected = REPLAYED if nonce in live else \
            REPLAY_TABLE_FULL if len(live) >= BUCKET else None
        assert bucket.take(ts, nonce, now) == expected
        if expected is None:
            model[nonce] = ts + MAX_SKEW_S + GRACE_S
        assert bucket.live(now) == len({n for n, until in model.items() if until >= now})


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "safeguards")
    with open(log, "wb") as sink:
        return subprocess.Popen([exe, *args], stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


async def _pid(client: httpx.AsyncClient) -> int:
    return int((await client.get("/healthz")).json()["pid"])


@pytest.mark.slow
async def test_an_assertion_taken_by_one_worker_is_replayed_on_another(
        region: Region, nats_url: str, tmp_path: Path) -> None:
    up_port, port = free_port(), free_port()
    keys = {f"SAFEGUARDS_CALLER_KEYS_{region.name.upper()}": f"{KEY.key_id}:{KEY.secret.hex()}"}
    procs = [_spawn(["upstream", "--port", str(up_port)], tmp_path / "upstream.log", {}),
             _spawn(["proxy", "--region", region.name, "--upstream",
                     f"http://127.0.0.1:{up_port}", "--nats", nats_url, "--port", str(port),
                     "--caller-auth", "required", "--workers", "2",
                     "--max-request-rate", "10",
                     "--nonce-ledger-deadline-ms", "2000"],  # a busy test machine: no 503 by load
                    tmp_path / "proxy.log", keys)]
    url = f"http://127.0.0.1:{port}"
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)  # one worker a client
    try:
        wait_for_port("127.0.0.1", up_port, 30)
        wait_for_port("127.0.0.1", port, 60)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url) as probe:
            while (await probe.get("/readyz")).status_code != 200:  # each worker synced
                assert time.monotonic() < deadline
        headers = {"x-csp-account-id": "acct-1", "content-type": "application/json",
                   ASSERTION_HEADER: _proof(time.time())}
        async with httpx.AsyncClient(base_url=url, limits=one) as first:
            taken_by = await _pid(first)
            answer = await first.post("/v1/messages", content=BODY, headers=headers)
            assert answer.status_code == 200, answer.text
            assert await _pid(first) == taken_by  # the same connection, the same worker
        other = None
        for _ in range(60):  # new connections until the kernel hands one to the other worker
            async with httpx.AsyncClient(base_url=url, limits=one) as client:
                if await _pid(client) == taken_by:
                    continue
                other = await _pid(client)
                replayed = await client.post("/v1/messages", content=BODY, headers=headers)
                break
        assert other is not None and other != taken_by
        assert replayed.status_code == 401
        assert replayed.json()["error"]["message"] == "the caller assertion was already used"
        fresh = {**headers, ASSERTION_HEADER: _proof(time.time())}
        async with httpx.AsyncClient(base_url=url) as client:  # a new nonce passes anywhere
            assert (await client.post("/v1/messages", content=BODY,
                                      headers=fresh)).status_code == 200
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    proxy_log = (tmp_path / "proxy.log").read_text()
    assert procs[1].returncode == 0, proxy_log
    assert "replay table: 6080 slots (0.1 MB) for 10 signed requests/s" in proxy_log
