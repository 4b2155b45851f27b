"""What the region tests share: a fresh migrated database, a request through a proxy with the
official SDK, and waiting on an async condition."""

from __future__ import annotations

import secrets
from typing import Any

import anthropic
import anyio
import asyncpg

from safeguards.adapters.store import migrate


async def new_database(postgres_server: Any, prefix: str) -> str:
    """A new, empty database on the test server (dropped with the server at session end)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_server.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url: str = postgres_server.database_url(name)
    return url


async def region_database(postgres_server: Any, prefix: str) -> str:
    """A new database on the test server, migrated to head."""
    url = await new_database(postgres_server, prefix)
    await migrate(url)
    return url


async def ask(proxy_url: str, account: str, text: str, *, api_key_id: str | None = None) -> int:
    """One request as ``account`` (with the CSP's API-key id header, where given) through the
    proxy: its HTTP status."""
    headers = {"x-csp-account-id": account}
    if api_key_id is not None:
        headers["x-csp-api-key-id"] = api_key_id
    sdk = anthropic.AsyncAnthropic(base_url=proxy_url, api_key="unused", max_retries=0,
                                   default_headers=headers)
    try:
        await sdk.messages.create(model="claude-test-1", max_tokens=16,
                                  messages=[{"role": "user", "content": text}])
    except anthropic.APIStatusError as exc:
        return exc.status_code
    return 200


async def until(check: Any, within_s: float = 30.0) -> None:
    """Until the async ``check`` answers true (TimeoutError after ``within_s``)."""
    with anyio.fail_after(within_s):
        while not await check():  # noqa: ASYNC110 - what it waits for has no event
            await anyio.sleep(0.1)
