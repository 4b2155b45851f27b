"""Account ids, regions, NATS-safe subject tokens and partitions.

Account ids are validated once at the edge. A region's policy changes are a history of their own
too, ``policy:<region>``. Three kinds of *aggregate* have a history of their own
too, under reserved ids: an organisation (``org:<organisation id>``), an API key
(``key:<its regional fingerprint>``) and a harmful prompt (``prompt:<its regional link key>``, an
HMAC of the normalised newest user turn: ``core.prompt_links``); each is fed the scores of every
account that names it (a prompt: only scores that struck), and its level applies to all of them.
A caller's account id may not take a reserved prefix, so no account can write into (or be
mistaken for) an aggregate's stream.

The subject token is a reversible escape of the id in which only ``[A-Za-z0-9_-]`` survive;
every other byte becomes ``~XX``. So no account id, however hostile, can put ``.``, ``*``,
``>`` or whitespace into a NATS subject.
"""

from __future__ import annotations

import hashlib
import re

from safeguards.core.errors import InvalidAccountId, InvalidRegion

MAX_ACCOUNT_ID_LENGTH = 128
_ACCOUNT_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space, no control characters
_REGION = re.compile(r"[a-z][a-z0-9]{0,15}")
ORGANIZATION_PREFIX = "org:"
API_KEY_PREFIX = "key:"
PROMPT_PREFIX = "prompt:"
AGGREGATE_PREFIXES = (ORGANIZATION_PREFIX, API_KEY_PREFIX, PROMPT_PREFIX)
POLICY_PREFIX = "policy:"  # the region's policy history: policy:<region>
RESERVED_PREFIXES = (*AGGREGATE_PREFIXES, POLICY_PREFIX)
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def validate_account_id(account_id: object) -> str:
    """Return ``account_id`` if acceptable, else raise :class:`InvalidAccountId` saying why."""
    if not isinstance(account_id, str):
        raise InvalidAccountId(f"account id must be a string, got {type(account_id).__name__}")
    if not account_id:
        raise InvalidAccountId("account id is empty")
    if len(account_id) > MAX_ACCOUNT_ID_LENGTH:
        raise InvalidAccountId(
            f"account id is {len(account_id)} characters; the limit is {MAX_ACCOUNT_ID_LENGTH}"
        )
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccountId(
            "account id may hold only printable ASCII without spaces or control characters"
        )
    return account_id


def validate_caller_account_id(account_id: object) -> str:
    """An account id as a caller presents it: valid, and not in a reserved namespace."""
    account = validate_account_id(account_id)
    if account.startswith(RESERVED_PREFIXES):
        raise InvalidAccountId(
            f"account ids may not start with {', '.join(map(repr, RESERVED_PREFIXES))}")
    return account


def policy_entity(region: str) -> str:
    """The id of the region's policy history."""
    return POLICY_PREFIX + validate_region(region)


def organization_entity(organization_id: object) -> str:
    """The id under which an organisation's own history and enforcement are kept."""
    if not isinstance(organization_id, str) or not organization_id:
        raise InvalidAccountId("organisation id is empty")
    limit = MAX_ACCOUNT_ID_LENGTH - len(ORGANIZATION_PREFIX)
    if len(organization_id) > limit:
        raise InvalidAccountId(
            f"organisation id is {len(organization_id)} characters; the limit is {limit}")
    if not _ACCOUNT_ID.fullmatch(organization_id):
        raise InvalidAccountId(
            "organisation id may hold only printable ASCII without spaces or control characters")
    return ORGANIZATION_PREFIX + organization_id


def api_key_entity(fingerprint: object) -> str:
    """The id under which an API key's own history and enforcement are kept: its regional
    fingerprint (32 lower-case hex digits, an HMAC of the key's id), never the id itself."""
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidAccountId("API key fingerprint must be 32 lower-case hex digits")
    return API_KEY_PREFIX + fingerprint


def prompt_entity(link_key: object) -> str:
    """The id under which a harmful prompt's own history and enforcement are kept: its regional
    link key (32 lower-case hex digits, an HMAC of the normalised prompt), never its text."""
    if not isinstance(link_key, str) or not _FINGERPRINT.fullmatch(link_key):
        raise InvalidAccountId("prompt link key must be 32 lower-case hex digits")
    return PROMPT_PREFIX + link_key


def aggregate_kind(entity_id: str) -> str | None:
    """``"org"``, ``"key"`` or ``"prompt"`` for an aggregate's id; None for an account's."""
    if entity_id.startswith(ORGANIZATION_PREFIX):
        return "org"
    if entity_id.startswith(API_KEY_PREFIX):
        return "key"
    if entity_id.startswith(PROMPT_PREFIX):
        return "prompt"
    return None


def validate_region(region: object) -> str:
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise InvalidRegion(f"region must match {_REGION.pattern}, got {region!r}")
    return region


def subject_token(account_id: str) -> str:
    """The account's token for NATS subjects: reversible, and never a wildcard or separator."""
    data = validate_account_id(account_id).encode("ascii")
    return "".join(chr(b) if b in _SAFE else f"~{b:02X}" for b in data)


def account_from_token(token: str) -> str:
    out = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "~":
            try:
                out.append(int(token[i + 1 : i + 3], 16))
            except ValueError:
                raise InvalidAccountId("subject token has a broken escape") from None
            i += 3
        else:
            out.append(ord(ch))
            i += 1
    return validate_account_id(out.decode("ascii"))


def partition_of(account_id: str, partitions: int) -> int:
    """``hash(account) mod P`` with a hash that is stable across processes and versions."""
    digest = hashlib.blake2b(account_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def derive_id(*parts: str) -> str:
    """A deterministic id from its causes, so that replaying a decision yields the same ids."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()
