"""Temporary credentials of a Bedrock batch job's role, so the gate reads the job's input as the
job would, never with its own authority.

A ``CreateModelInvocationJob`` names the IAM role (``roleArn``) Bedrock assumes to read the
input. Were the gate to read the input with its own credentials, a caller could name an object
that only the gate may read and learn, from the gate's answer, that it exists and what its
records hold (a confused deputy). So the gate asks STS to assume the job's role
(``AssumeRole``, signed with the gate's own credentials: botocore's chain or the configured
keys), session name ``safeguards-job-gate`` (the gate, in the role's CloudTrail), for the
shortest duration STS grants (15 minutes), and reads with the temporary keys. ``ExternalId`` is
the caller's account where it fits STS's pattern: a role's trust policy may require it
(``sts:ExternalId``), so that a caller who names another account's role is refused by STS
before a byte is read (a caller's right to pass the role is checked by the provider only after
the gate's read).

A role that STS will not let the gate assume is :class:`~input_errors.AccessRefused` (403, or
400 for a role STS finds invalid); a failure of the gate's own credentials or of STS itself is
:class:`~input_errors.ObjectUnreadable` (as an unreachable store is). Credentials are kept per
(role, external id) until ``refresh_before_s`` before they expire, at most ``max_roles`` of
them (the least recently used dropped first). The keys are never logged (``repr`` leaves the
secrets out; botocore, which logs bodies and signing material at DEBUG, is held at INFO).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safeguards.adapters.csp.input_errors import AccessRefused, ObjectUnreadable

SESSION_NAME = "safeguards-job-gate"
ROLE_ARN = re.compile(r"arn:aws[a-z-]{0,16}:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9+=,.@:/_-]{2,1224}")
_REFUSED = frozenset(("AccessDenied", "AccessDeniedException", "RegionDisabledException"))
# botocore logs at DEBUG each response's body (AssumeRole's holds the role's secret key) and each
# request's signing material (the session token): never logged, whatever the process's level
logging.getLogger("botocore").setLevel(logging.INFO)


@dataclass(frozen=True, slots=True)
class RoleCredentials:
    """An assumed role's temporary keys (secrets kept out of ``repr``) and when they expire."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float  # seconds since the epoch


def external_id(account: str) -> str | None:
    """The ``ExternalId`` the gate sends for ``account`` (None: it does not fit STS's pattern,
    and a role that requires one refuses the gate)."""
    return account if _EXTERNAL_ID.fullmatch(account) else None


def _code(exc: Exception) -> str:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "error"))
    return re.sub(r"[^A-Za-z0-9_.-]", "", code)[:64] or "error"


class AssumedRoles:
    """The roles' credentials, assumed through ``sts`` (a botocore STS client, made on first
    use by ``make_client``) and kept until shortly before they expire. Thread-safe: the S3
    reader calls it from worker threads."""

    def __init__(self, make_client: Callable[[], Any], *, duration_s: int = 900,
                 refresh_before_s: float = 300.0, max_roles: int = 256,
                 clock: Callable[[], float] = time.time) -> None:
        self._make_client = make_client
        self._client: Any = None
        self.duration_s = duration_s
        self.refresh_before_s = refresh_before_s
        self.max_roles = max_roles
        self._clock = clock
        self._held: OrderedDict[tuple[str, str | None], RoleCredentials] = OrderedDict()
        self._lock = threading.Lock()
        self.assumed = 0  # AssumeRole calls made (the others were served from the cache)

    def credentials(self, role_arn: str, account: str) -> RoleCredentials:
        """The role's credentials for a job of ``account``; raises ``AccessRefused`` or
        ``ObjectUnreadable`` (see the module's docstring)."""
        if not ROLE_ARN.fullmatch(role_arn):
            raise AccessRefused(400, "roleArn: expected an IAM role's ARN", "ValidationError")
        key = (role_arn, external_id(account))
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.expires_at - self.refresh_before_s > self._clock():
                self._held.move_to_end(key)
                return held
        fresh = self._assume(*key)
        with self._lock:
            self._held[key] = fresh
            self._held.move_to_end(key)
            while len(self._held) > self.max_roles:
                self._held.popitem(last=False)
        return fresh

    def forget(self, role_arn: str, account: str) -> None:
        """Drops the role's credentials (S3 found them invalid or expired)."""
        with self._lock:
            self._held.pop((role_arn, external_id(account)), None)

    def _sts(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _assume(self, role_arn: str, external: str | None) -> RoleCredentials:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ExternalId": external} if external else {}
        try:
            answer = self._sts().assume_role(RoleArn=role_arn, RoleSessionName=SESSION_NAME,
                                             DurationSeconds=self.duration_s, **extra)
        except ClientError as exc:
            code = _code(exc)
            if code in _REFUSED:
                raise AccessRefused(403, "the safety gate may not assume the job's role to "
                                         "read its input", code) from None
            if code == "ValidationError":
                raise AccessRefused(400, "roleArn: STS found the role invalid", code) from None
            raise ObjectUnreadable(f"sts: {code}") from None
        except BotoCoreError as exc:  # no credentials of the gate's own, STS unreachable
            raise ObjectUnreadable(f"sts: {type(exc).__name__}") from None
        with self._lock:
            self.assumed += 1
        found = answer["Credentials"]
        return RoleCredentials(str(found["AccessKeyId"]), str(found["SecretAccessKey"]),
                               str(found["SessionToken"]), found["Expiration"].timestamp())
