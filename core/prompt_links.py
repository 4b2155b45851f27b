"""The same harmful prompt across accounts: its regional link key, and the scores it forwards.

An attacker who rotates fresh accounts sends the same harmful prompt from each; every account
starts clean, so each is served until its own history escalates. A prompt's *link key* joins
them without keeping the prompt: an HMAC-SHA256, under the region's link key (the secret the
API-key fingerprint uses), of the newest user turn after :func:`normalise_prompt`, cut to 32 hex
digits. The gate computes it for every request (a microsecond or two) and sends it with the
request's metadata; only the HMAC leaves the process, never the text, and keys from different
regions cannot be joined.

A prompt becomes an aggregate (``prompt:<link key>``, ``core.ids.prompt_entity``) only when the
classifier flags it: an account's actor that records a strike on a prompt's score links the
account to the prompt (``AccountLinked``, rule ``link.prompt``; the key is the one the score
carries, from the gate through its content item, else its request's: :func:`scored_prompt_link`)
and forwards that score to the
prompt's own history (:func:`forwarded_scores`), where it counts once per account. Benign prompts
never get a history. The prompt's level applies to every request that carries the same prompt,
and from the policy's ``escalation.prompt_refuse_level`` on (which it reaches only once
``prompt_refuse_accounts`` distinct accounts sent it flagged), refuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import unicodedata
from collections.abc import Sequence

from safeguards.core.events import AccountLinked, Event, ScoreRecorded, Signal
from safeguards.core.ids import aggregate_kind, derive_id
from safeguards.core.state import AccountState

LINK_KEY_HEX = 32  # hex digits kept of the HMAC (128 bits)
PROMPT_LINK_RULE = "link.prompt"
_DOMAIN = b"prompt\x1f"  # apart from the API-key fingerprints made under the same key
_DIGEST_DOMAIN = b"safeguards prompt digest v1\x1f"  # content digests: apart from link keys


def normalise_prompt(text: str) -> str:
    """The form in which two prompts count as the same: Unicode NFKC (compatibility forms such
    as full-width letters fold to plain ones), case-folded, whitespace runs collapsed to one
    space and trimmed. Idempotent."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def prompt_link_key(secret: bytes, text: str) -> str | None:
    """The prompt's regional link key (32 lower-case hex digits); None for a prompt that is
    empty once normalised (nothing to link)."""
    normalised = normalise_prompt(text)
    if not normalised:
        return None
    data = _DOMAIN + normalised.encode("utf-8", "surrogatepass")
    return hmac.new(secret, data, hashlib.sha256).hexdigest()[:LINK_KEY_HEX]


def content_digest(secret: bytes | None, text: str) -> str:
    """A content's digest as the region stores and publishes it (a request's ``prompt_sha256``,
    a score's ``content_sha256``): an HMAC-SHA256 of the exact text under the region's link key,
    domain-separated from link keys and API-key fingerprints, so that nobody without the key can
    confirm a guessed short prompt from it, and a prompt's score and request digests still match.
    A plain SHA-256 where ``secret`` is None (tests that run without the region's keys)."""
    data = text.encode("utf-8", "surrogatepass")
    if secret is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(secret, _DIGEST_DOMAIN + data, hashlib.sha256).hexdigest()


def scored_prompt_link(state: AccountState, score: ScoreRecorded) -> str | None:
    """The link key of the prompt ``score`` scored, in ``state``'s history: the key the score
    carries, in an account's own history (a batch's prompts are scored from its creation, before
    their requests are observed with its results), else the key its request's RequestObserved
    brought (``AccountState.prompt_of``); None for neither. A key on a score in an aggregate's
    history (an organisation's, a prompt's) names nothing."""
    if (score.prompt_link is not None and score.member_account is None
            and aggregate_kind(state.account_id) is None):
        return score.prompt_link
    return state.prompt_of(score.request_id)


def forwarded_scores(signal: Signal, events: Sequence[Event]) -> list[Signal]:
    """The score signals an account's decision sends on: one to each prompt the decision linked
    the account to (``AccountLinked`` with link ``prompt``), naming the account as the member
    whose request it was (and no link key: the prompt's history links to nothing). Ids derive
    from the score's signal id and the prompt, so a decision replayed forwards the same signals
    (deduplicated by the bus and the prompt's inbox)."""
    score = signal.observation
    if not isinstance(score, ScoreRecorded):
        return []
    return [
        signal.sent_on(derive_id("forward", signal.signal_id, e.body.aggregate), e.body.aggregate,
                       dataclasses.replace(score, member_account=signal.account_id,
                                           prompt_link=None))
        for e in events
        if isinstance(e.body, AccountLinked) and e.body.link == "prompt"
    ]
