"""Reading a Vertex AI batch prediction job's input from Cloud Storage, bounded, for the job gate.

The job names its input by ``gs://bucket/object`` URIs (``inputConfig.gcsSource.uris``); the
gate reads each object through Cloud Storage's JSON API (``GET .../download/storage/v1/b/
{bucket}/o/{object}?alt=media``, ranged) with the same bounds and typed errors as S3
(``object_store``): at most ``max_objects`` URIs and ``max_bytes`` in all; a wildcard URI
cannot be checked object by object before the job starts and is refused
(:class:`~input_errors.BadInputUri`).

Whose authority reads: the caller's own, the OAuth bearer token of the job's creation
(``Authorization: Bearer ...``, the caller's identity on Vertex), never the gate's. Read with
the gate's credentials, a caller could name an object only the gate may read and learn from the
gate's answer that it exists and what its records hold (a confused deputy); with the caller's
token the gate learns nothing the caller could not ask Cloud Storage itself. No token, or one
Cloud Storage refuses (401, 403), is :class:`~input_errors.AccessRefused` in Vertex's shape
(``UNAUTHENTICATED``, ``PERMISSION_DENIED``), whatever the account's standing. The token is
sent to Cloud Storage only, and never logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from safeguards.adapters.csp.input_errors import (
    AccessRefused,
    BadInputUri,
    InputTooLarge,
    ObjectUnreadable,
)
from safeguards.adapters.csp.object_store import InputLimits, range_total

_GS_URI = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/([^\n\r]{1,1024})")
_UNREADABLE = {404: "NOT_FOUND"}
_REFUSED = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,4096}")  # RFC 6750's b64token


@dataclass(frozen=True, slots=True, kw_only=True)
class GcsConfig(InputLimits):
    endpoint_url: str = "https://storage.googleapis.com"


def parse_gs_uri(uri: object) -> tuple[str, str]:
    """(bucket, object name) of a ``gs://`` URI naming one object."""
    found = _GS_URI.fullmatch(uri) if isinstance(uri, str) else None
    if found is None:
        raise BadInputUri("gcsSource.uris: expected gs://bucket/object")
    if "*" in found.group(2):
        raise BadInputUri("gcsSource.uris: a wildcard cannot be checked before the job starts; "
                          "name each object")
    return found.group(1), found.group(2)


def bearer_token(authorization: list[str]) -> str:
    """The caller's OAuth token from the ``Authorization`` header's values (one, ``Bearer``);
    ``AccessRefused`` (401) otherwise. The token is never in the error."""
    if not authorization:
        raise AccessRefused(401, "the job's input is read with the caller's own credentials: "
                                 "the request carries no OAuth bearer token", "UNAUTHENTICATED")
    scheme, _, token = authorization[0].strip().partition(" ")
    if (len(authorization) > 1 or scheme.lower() != "bearer"
            or not _TOKEN.fullmatch(token.strip())):
        raise AccessRefused(401, "the job's input is read with the caller's own credentials: "
                                 "expected one Authorization: Bearer header", "UNAUTHENTICATED")
    return token.strip()


class GcsReader:
    """Reads a job's input objects through Cloud Storage's JSON API, as the caller."""

    def __init__(self, config: GcsConfig | None = None) -> None:
        self.config = config or GcsConfig()

    async def read(self, uris: list[object], authorization: list[str]
                   ) -> list[tuple[str, bytes]]:
        """(object name, bytes) of each URI, in the job's order, read with the caller's token
        (``authorization``: the creation's ``Authorization`` header values)."""
        if not 0 < len(uris) <= self.config.max_objects:
            raise InputTooLarge(f"gcsSource.uris: 1 to {self.config.max_objects} objects")
        named = [parse_gs_uri(uri) for uri in uris]
        c = self.config
        headers = {"authorization": f"Bearer {bearer_token(authorization)}"}
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

    async def read_folder(self, folder: object, authorization: list[str]
                          ) -> list[tuple[str, bytes]]:
        """(object name, bytes) of each object under ``gs://bucket/prefix``, in name order, read
        with the caller's token (a job's output folder: ``job_outputs``), with the same bounds
        as an input."""
        if not isinstance(folder, str) or not folder.startswith("gs://"):
            raise BadInputUri("gcsOutputDirectory: expected gs://bucket/folder")
        bucket, _, prefix = folder.removeprefix("gs://").partition("/")
        parse_gs_uri(f"gs://{bucket}/{prefix or '_'}")  # the bucket's and prefix's patterns
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        c = self.config
        headers = {"authorization": f"Bearer {bearer_token(authorization)}"}
        timeout = httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s)
        names: list[str] = []
        query = {"prefix": prefix, "fields": "items(name),nextPageToken"}
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
                while True:
                    answer = await client.get(
                        f"{c.endpoint_url}/storage/v1/b/{quote(bucket, safe='')}/o",
                        params=query)
                    if answer.status_code in _REFUSED:
                        raise AccessRefused(answer.status_code, "the caller may not read the "
                                            "job's output", _REFUSED[answer.status_code])
                    if answer.status_code != 200:
                        raise ObjectUnreadable(_UNREADABLE.get(answer.status_code,
                                                               f"status_{answer.status_code}"))
                    page = answer.json()
                    if not isinstance(page, dict):
                        raise ObjectUnreadable("malformed")
                    names += [str(i["name"]) for i in page.get("items") or ()
                              if isinstance(i, dict) and not str(i.get("name", "/")).endswith("/")]
                    if len(names) > c.max_objects:
                        raise InputTooLarge(f"the job's output holds more than {c.max_objects} "
                                            "objects")
                    if not page.get("nextPageToken"):
                        break
                    query["pageToken"] = str(page["nextPageToken"])
        except (httpx.HTTPError, ValueError) as exc:
            raise ObjectUnreadable(type(exc).__name__) from None
        if not names:
            raise ObjectUnreadable("NOT_FOUND")
        return await self.read([f"gs://{bucket}/{name}" for name in sorted(names)],
                               authorization)

    async def _object(self, client: httpx.AsyncClient, bucket: str, name: str,
                      left: int) -> bytes:
        url = (f"{self.config.endpoint_url}/download/storage/v1/b/{quote(bucket, safe='')}"
               f"/o/{quote(name, safe='')}?alt=media")
        async with client.stream("GET", url, headers={"range": f"bytes=0-{left}"}) as answer:
            if answer.status_code == 416:
                return b""  # an empty object has no byte 0
            if answer.status_code in _REFUSED:
                raise AccessRefused(answer.status_code, "the caller may not read the job's "
                                    "input", _REFUSED[answer.status_code])
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
