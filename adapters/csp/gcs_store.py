"""Reading a Vertex AI batch prediction job's input from Cloud Storage, bounded, for the job gate.

The job names its input by ``gs://bucket/object`` URIs (``inputConfig.gcsSource.uris``); the
gate reads each object through Cloud Storage's JSON API (``GET .../download/storage/v1/b/
{bucket}/o/{object}?alt=media``, ranged) with the same bounds and typed errors as S3
(``object_store``): at most ``max_objects`` URIs and ``max_bytes`` in all; a wildcard URI
cannot be checked object by object before the job starts and is refused
(:class:`~object_store.BadInputUri`). Credentials: Application Default Credentials
(``google.auth.default``, read-only scope, refreshed in a worker thread), or none for an
emulator (``anonymous``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from safeguards.adapters.csp.object_store import (
    BadInputUri,
    InputLimits,
    InputTooLarge,
    ObjectUnreadable,
    range_total,
)

_GS_URI = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/([^\n\r]{1,1024})")
_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_UNREADABLE = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GcsConfig(InputLimits):
    endpoint_url: str = "https://storage.googleapis.com"
    anonymous: bool = False  # an emulator: no credentials


def parse_gs_uri(uri: object) -> tuple[str, str]:
    """(bucket, object name) of a ``gs://`` URI naming one object."""
    found = _GS_URI.fullmatch(uri) if isinstance(uri, str) else None
    if found is None:
        raise BadInputUri("gcsSource.uris: expected gs://bucket/object")
    if "*" in found.group(2):
        raise BadInputUri("gcsSource.uris: a wildcard cannot be checked before the job starts; "
                          "name each object")
    return found.group(1), found.group(2)


class GcsReader:
    def __init__(self, config: GcsConfig | None = None) -> None:
        self.config = config or GcsConfig()
        self._credentials: Any = None

    async def read(self, uris: list[object]) -> list[tuple[str, bytes]]:
        """(object name, bytes) of each URI, in the job's order."""
        if not 0 < len(uris) <= self.config.max_objects:
            raise InputTooLarge(f"gcsSource.uris: 1 to {self.config.max_objects} objects")
        named = [parse_gs_uri(uri) for uri in uris]
        c = self.config
        headers = {} if c.anonymous else {"authorization": f"Bearer {await self._token()}"}
        timeout = httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s)
        out: list[tuple[str, bytes]] = []
        left = c.max_bytes
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
                for bucket, name in named:
                    data = await self._object(client, bucket, name, left)
                    left -= len(data)
                    out.append((name, data))
        except httpx.HTTPError as exc:
            raise ObjectUnreadable(type(exc).__name__) from None
        return out

    async def _token(self) -> str:
        def refresh() -> str:
            import google.auth
            import google.auth.transport.requests

            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[_SCOPE])
            if not self._credentials.valid:
                self._credentials.refresh(google.auth.transport.requests.Request())
            return str(self._credentials.token)

        try:
            return await anyio.to_thread.run_sync(refresh)
        except Exception as exc:  # no credentials here: the input cannot be read
            raise ObjectUnreadable(f"credentials: {type(exc).__name__}") from None

    async def _object(self, client: httpx.AsyncClient, bucket: str, name: str,
                      left: int) -> bytes:
        url = (f"{self.config.endpoint_url}/download/storage/v1/b/{quote(bucket, safe='')}"
               f"/o/{quote(name, safe='')}?alt=media")
        async with client.stream("GET", url, headers={"range": f"bytes=0-{left}"}) as answer:
            if answer.status_code == 416:
                return b""  # an empty object has no byte 0
            if answer.status_code not in (200, 206):
                raise ObjectUnreadable(_UNREADABLE.get(answer.status_code,
                                                       f"status_{answer.status_code}"))
            total = range_total(answer.headers.get("content-range"))
            if total is not None and total > left:
                raise InputTooLarge(f"the job's input exceeds {self.config.max_bytes} bytes")
            data = bytearray()
            async for chunk in answer.aiter_bytes():
                data += chunk
                if len(data) > left:  # a store that sends more than it declared
                    raise InputTooLarge(f"the job's input exceeds {self.config.max_bytes} bytes")
            return bytes(data)
