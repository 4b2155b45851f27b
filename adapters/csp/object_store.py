"""Reading a batch job's input from the object store (S3's API), bounded, for the job gate.

A provider's batch job names its input by URI (Bedrock: ``s3://bucket/key`` for one JSON Lines
file, or ``s3://bucket/prefix/`` for every object under a folder); the gate reads it before the
job is created (``provider_batch_jobs``). The read is bounded: at most ``max_objects`` objects
and ``max_bytes`` in all (what the object store declares is checked before a byte is read, and
what it sends is cut one byte past the limit). Every failure is a typed error
(``input_errors``): a bad URI (:class:`BadInputUri`), input over the limits
(:class:`InputTooLarge`), the job's role denied the read (:class:`AccessRefused`: S3's
``AccessDenied``, whether or not the object exists, as S3 answers that role), an object the
store would not or could not hand over otherwise (:class:`ObjectUnreadable`); each with a short
code as its ``reason``, never the store's message.

Whose authority reads: the job's role (``roleArn``), never the gate's. The gate's own
credentials only sign STS's ``AssumeRole`` (``assumed_roles``); the objects are listed and read
with the role's temporary keys, so a caller learns nothing of an object the role it names may
not read (the gate reading with its own credentials would be a confused deputy).

botocore's client is synchronous; each read runs in a worker thread (a job's creation is rare
next to the requests the gate serves), with an S3 client made for the role's keys. The gate's
credentials, region and endpoints come from botocore's usual chain (environment, profile,
instance role; ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_STS``) unless the
:class:`ObjectStoreConfig` names them.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters.csp.assumed_roles import AssumedRoles, RoleCredentials
from safeguards.adapters.csp.input_errors import AccessRefused as AccessRefused
from safeguards.adapters.csp.input_errors import BadInputUri as BadInputUri
from safeguards.adapters.csp.input_errors import InputTooLarge as InputTooLarge
from safeguards.adapters.csp.input_errors import ObjectStoreError as ObjectStoreError
from safeguards.adapters.csp.input_errors import ObjectUnreadable as ObjectUnreadable

_ROLE_DENIED = frozenset(("AccessDenied", "AllAccessDisabled", "AccountProblem"))
_STALE_KEYS = frozenset(("InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
                         "TokenRefreshRequired"))
_S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.{0,1024})", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputLimits:
    """How much of a job's input the gate reads, and how long it waits (every object store)."""

    max_bytes: int = 64 * 1024 * 1024  # a job's input, all its objects together
    max_objects: int = 100  # objects under a folder URI, or URIs named
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStoreConfig(InputLimits):
    endpoint_url: str | None = None  # None: botocore's (AWS, or AWS_ENDPOINT_URL_S3)
    sts_endpoint_url: str | None = None  # None: botocore's (AWS, or AWS_ENDPOINT_URL_STS)
    region: str | None = None
    access_key_id: str | None = None  # the gate's, for STS only; None: botocore's chain
    secret_access_key: str | None = None
    role_duration_s: int = 900  # an assumed role's credentials: STS's shortest
    max_roles: int = 256  # roles whose credentials are kept


def parse_s3_uri(uri: object) -> tuple[str, str]:
    """(bucket, key or folder prefix) of an ``s3://`` URI."""
    found = _S3_URI.fullmatch(uri) if isinstance(uri, str) else None
    if found is None:
        raise BadInputUri("s3Uri: expected s3://bucket/key or s3://bucket/folder/")
    return found.group(1), found.group(2)


class S3Reader:
    """Reads a job's input objects through S3's API, as the job's role (``assumed_roles``)."""

    def __init__(self, config: ObjectStoreConfig | None = None) -> None:
        self.config = config or ObjectStoreConfig()
        self.roles = AssumedRoles(lambda: self._botocore("sts"),
                                  duration_s=self.config.role_duration_s,
                                  max_roles=self.config.max_roles)
        self._session: Any = None
        self._lock = threading.Lock()

    async def read(self, uri: object, role_arn: str, account: str,
                   expected_owner: str | None = None) -> list[tuple[str, bytes]]:
        """(key, bytes) of each object the URI names, in key order, read as ``role_arn`` for a
        job of ``account`` (its ``ExternalId``)."""
        bucket, key = parse_s3_uri(uri)
        return await anyio.to_thread.run_sync(self._read, bucket, key, expected_owner, role_arn,
                                              account)

    def _botocore(self, service: str, role: RoleCredentials | None = None) -> Any:
        """A client of ``service``: STS with the gate's credentials, S3 with the role's."""
        import botocore.config
        import botocore.session

        c = self.config
        keys = ({"aws_access_key_id": role.access_key_id,
                 "aws_secret_access_key": role.secret_access_key,
                 "aws_session_token": role.session_token} if role is not None else
                {"aws_access_key_id": c.access_key_id,
                 "aws_secret_access_key": c.secret_access_key})
        with self._lock:  # a botocore session is not thread-safe (its clients are)
            if self._session is None:
                self._session = botocore.session.get_session()
            return self._session.create_client(
                service, endpoint_url=c.endpoint_url if role is not None else c.sts_endpoint_url,
                region_name=c.region, **keys, config=botocore.config.Config(
                    connect_timeout=c.connect_timeout_s, read_timeout=c.read_timeout_s,
                    retries={"max_attempts": 2, "mode": "standard"}))

    def _read(self, bucket: str, key: str, owner: str | None, role_arn: str,
              account: str) -> list[tuple[str, bytes]]:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ExpectedBucketOwner": owner} if owner else {}
        try:
            client = self._botocore("s3", self.roles.credentials(role_arn, account))
            keys = self._listed(client, bucket, key, extra) if key.endswith("/") or not key else [
                key]
            out: list[tuple[str, bytes]] = []
            left = self.config.max_bytes
            for name in keys:
                data = self._object(client, bucket, name, left, extra)
                left -= len(data)
                out.append((name, data))
            return out
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            code = re.sub(r"[^A-Za-z0-9_.-]", "", code)[:64] or "error"
            if code in _ROLE_DENIED:
                raise AccessRefused(403, "the job's role may not read its input", code) from None
            if code in _STALE_KEYS:  # the role's keys, revoked or expired early: assume anew
                self.roles.forget(role_arn, account)
            raise ObjectUnreadable(code) from None
        except BotoCoreError as exc:
            raise ObjectUnreadable(type(exc).__name__) from None

    def _listed(self, client: Any, bucket: str, prefix: str, extra: dict[str, str]) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **token, **extra)
            for item in page.get("Contents", []):
                if not str(item["Key"]).endswith("/"):  # a folder marker holds no records
                    keys.append(str(item["Key"]))
                if len(keys) > self.config.max_objects:
                    raise InputTooLarge(f"the job's input folder holds more than "
                                        f"{self.config.max_objects} objects")
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": str(page["NextContinuationToken"])}
        if not keys:
            raise ObjectUnreadable("NoSuchKey")
        return sorted(keys)

    def _object(self, client: Any, bucket: str, key: str, left: int,
                extra: dict[str, str]) -> bytes:
        limit = self.config.max_bytes
        # at most one byte past what is left: a store that sends more than it declared is
        # caught without reading the rest
        try:
            answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{left}", **extra)
        except Exception as exc:  # botocore's ClientError: an empty object has no byte 0
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise
        body = answer["Body"]
        try:
            declared = _total_size(answer)
            if declared is not None and declared > left:
                raise InputTooLarge(f"the job's input exceeds {limit} bytes")
            data = bytes(body.read(left + 1))
        finally:
            body.close()
        if len(data) > left:
            raise InputTooLarge(f"the job's input exceeds {limit} bytes")
        return data


def range_total(content_range: object) -> int | None:
    """The whole object's size a ranged read's ``Content-Range`` declares (None: none given)."""
    if isinstance(content_range, str) and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    return None


def _total_size(answer: dict[str, Any]) -> int | None:
    """The object's whole size: ``Content-Range``'s total (a ranged read), else its length."""
    total = range_total(answer.get("ContentRange"))
    if total is not None:
        return total
    length = answer.get("ContentLength")
    return int(length) if isinstance(length, int) else None
