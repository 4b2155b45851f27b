"""What the inline gate says about a request: intervention flags, actions, and the request,
response and decision objects shared by the gate, the proxy and ext_proc."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from safeguards.core.ids import API_KEY_PREFIX, ORGANIZATION_PREFIX, PROMPT_PREFIX

# Intervention flags (a bitmask, so the hot path tests bits instead of tuple membership).
ANNOTATE = 1
INTERVENE = 2
SYNC_CLASSIFY = 4
TERMINATE_STREAM = 8
THROTTLE = 16
BLOCK = 32
SCREEN = 64  # classified inline within a short deadline; refused only at high confidence
FLAGS = {
    "annotate": ANNOTATE, "intervene": INTERVENE, "sync_classify": SYNC_CLASSIFY,
    "terminate_stream": TERMINATE_STREAM, "throttle": THROTTLE, "block": BLOCK,
    "screen": SCREEN,
}

# Actions (the enforcement vocabulary of ARCHITECTURE.md).
ALLOW = "allow"
ANNOTATE_ACTION = "annotate"
INTERVENE_ACTION = "intervene"
THROTTLE_ACTION = "throttle"
BLOCK_ACTION = "block"
TERMINATE_ACTION = "terminate_stream"



def aggregates_of(organization_id: str | None, api_key_fingerprint: str | None,
                  prompt_link: str | None = None) -> tuple[str, ...]:
    """The entity ids of the aggregates a request names (validated where they were read): its
    organisation, its API key and the prompt its newest user turn is."""
    if organization_id is None and api_key_fingerprint is None:
        return () if prompt_link is None else (PROMPT_PREFIX + prompt_link,)
    out = [] if organization_id is None else [ORGANIZATION_PREFIX + organization_id]
    if api_key_fingerprint is not None:
        out.append(API_KEY_PREFIX + api_key_fingerprint)
    if prompt_link is not None:
        out.append(PROMPT_PREFIX + prompt_link)
    return tuple(out)


def flags_of(interventions: Iterable[str]) -> int:
    bits = 0
    for name in interventions:
        bits |= FLAGS.get(name, 0)
    return bits


class Decision:
    """What the gate says about one request. Shared instances: treat as read-only.

    ``fallback``: the fail-open/closed fallback the gate took to reach it (``<mode>:<cause>``;
    None: none), which the admission marks on the request (``GateRequest.fallback``)."""

    __slots__ = ("action", "fallback", "flags", "key", "level", "needs_classify", "reason",
                 "retry_after_s", "status")

    def __init__(self, action: str, reason: str, level: int, flags: int, *,
                 needs_classify: bool = False, status: int = 200,
                 retry_after_s: float = 0.0, fallback: str | None = None) -> None:
        self.action = action
        self.reason = reason
        self.level = level
        self.flags = flags
        self.needs_classify = needs_classify
        self.status = status
        self.retry_after_s = retry_after_s
        self.fallback = fallback
        self.key = (action, reason)

    @property
    def refused(self) -> bool:
        return self.status != 200

    @property
    def safety_prompt(self) -> bool:
        return bool(self.flags & INTERVENE) and self.status == 200

    @property
    def screen_only(self) -> bool:
        """Screened (a short deadline, fail open), not under the level's sync classification."""
        return self.needs_classify and not self.flags & SYNC_CLASSIFY

    @property
    def classify_stream(self) -> bool:
        return bool(self.flags & TERMINATE_STREAM) and self.status == 200

    def __repr__(self) -> str:
        return (f"Decision({self.action!r}, {self.reason!r}, level={self.level}, "
                f"status={self.status}, needs_classify={self.needs_classify}, "
                f"fallback={self.fallback!r})")


@dataclass(frozen=True, slots=True)
class StreamVerdict:
    """``Gate.stream_verdict``'s answer: ``stop``, a category name (or ``fail_closed``) when the
    stream must end now, else None; ``fallback``, the one it took (``<mode>:<cause>``) or None."""

    stop: str | None
    fallback: str | None = None


class GateRequest:
    """One request as the gate sees it: metadata only (the text stays with the caller).

    ``aggregates`` are the entity ids of the organisation (``org:<id>``) and the API key
    (``key:<fingerprint>``) the CSP named, and of the prompt (``prompt:<link key>``: the regional
    HMAC of its newest user turn, ``core.prompt_links``): their enforcement applies to the
    request as well as the account's own (a prompt has one only once it was flagged)."""

    __slots__ = ("account_id", "aggregates", "api_key_fingerprint", "fallback", "model",
                 "organization_id", "project_id", "prompt_chars", "prompt_link", "prompt_sha256",
                 "rated", "request_id", "served_unscored", "streamed", "surface")

    def __init__(self, account_id: str, request_id: str, *, model: str = "", streamed: bool = False,
                 prompt_chars: int = 0, prompt_sha256: str = "", surface: str = "proxy",
                 organization_id: str | None = None, project_id: str | None = None,
                 api_key_fingerprint: str | None = None, prompt_link: str | None = None,
                 rated: bool = True) -> None:
        self.account_id = account_id
        self.request_id = request_id
        self.model = model
        self.streamed = streamed
        self.prompt_chars = prompt_chars
        self.prompt_sha256 = prompt_sha256
        self.surface = surface
        self.organization_id = organization_id
        self.project_id = project_id
        self.api_key_fingerprint = api_key_fingerprint
        self.prompt_link = prompt_link
        self.aggregates = aggregates_of(organization_id, api_key_fingerprint, prompt_link)
        # charged to the account's request rate: False for a batch's requests after its first
        # (the batch's creation is one call; its requests run upstream on the batch's own quota)
        self.rated = rated
        # the gate's fail-open/closed fallback on it (``<mode>:<cause>``), copied by the admission
        # from what the gate returned (the latest one taken) and carried in its RequestObserved
        # signal: the durable record of fallbacks
        self.fallback: str | None = None
        # served without a score (its inline screening or classification failed open): its
        # content item says so, and the content stream scores it ahead of other content
        self.served_unscored = False


class GateResponse:
    __slots__ = ("action", "input_tokens", "output_tokens")

    def __init__(self, action: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        self.action = action
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


# A classifier answer not sealed by the region's classifier: the path is under attack, so the
# request always fails closed (``Gate.resolve``), whatever the rung or screening says.
CLASSIFIER_FORGED = "classifier_forged"


def refusal(decision: Decision) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What a front end tells the caller of a refused request (in its own protocol): the
    message and the extra headers, by the decision's status."""
    if decision.status == 429:
        retry = str(max(1, math.ceil(decision.retry_after_s)))
        return "rate limit exceeded for this account", (("retry-after", retry),)
    if decision.status == 529:  # the classifier too busy to answer in time: it may next time
        return "safety screening is unavailable; retry later", (("retry-after", "1"),)
    if decision.status == 503:
        return "the safeguards gate is starting; retry shortly", (("retry-after", "1"),)
    return "this request was refused by the platform's usage policy", ()

