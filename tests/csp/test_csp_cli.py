"""``safeguards upstream`` and ``safeguards proxy`` as separate processes, driven by the SDK."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import anthropic
import anyio
import pytest
from csp_testkit import sdk_http

from safeguards.adapters.csp.caller_auth import SignedCaller, load_caller_keys
from safeguards.adapters.embedded import free_port
from safeguards.adapters.embedded.ports import wait_for_port


@pytest.mark.slow
async def test_cli_proxy_in_front_of_cli_upstream(nats_url: str) -> None:
    exe = str(Path(sys.executable).parent / "safeguards")
    up, port = free_port(), free_port()
    region = "t" + secrets.token_hex(4)
    procs = [
        await anyio.open_process([exe, "upstream", "--port", str(up)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        await anyio.open_process([exe, "proxy", "--region", region, "--upstream",
                                  f"http://127.0.0.1:{up}", "--nats", nats_url, "--port",
                                  str(port), "--provision"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        await anyio.to_thread.run_sync(wait_for_port, "127.0.0.1", up, 30)
        await anyio.to_thread.run_sync(wait_for_port, "127.0.0.1", port, 30)
        sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="k",
                                       max_retries=0,
                                       # the proxy requires signed callers by default
                                       http_client=sdk_http().AsyncClient(auth=SignedCaller(
                                           load_caller_keys(region)[0], "cli-acct")))
        message = await sdk.messages.create(model="m", max_tokens=5,
                                            messages=[{"role": "user", "content": "hi"}])
        assert message.stop_reason == "end_turn"
        async with sdk.messages.stream(model="m", max_tokens=5, messages=[
                {"role": "user", "content": "#reply-chars=50"}]) as stream:
            assert len("".join([t async for t in stream.text_stream])) == 50
    finally:
        for p in procs:
            p.terminate()
        with anyio.fail_after(15):  # SIGTERM shuts both down promptly
            for p in procs:
                await p.wait()
