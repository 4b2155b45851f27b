"""The request half of the gate shared by the HTTP proxy and ext_proc: admit, then observe.

``admit`` takes the caller (``identity.IdentityHeaders`` read it), validates the Messages body,
picks what of the conversation is scored (``turns.scoring_text``: the newest turn in context, and
earlier turns only the first time this process sees them), runs ``Gate.check`` (timed into the
latency histogram) and, when the account's level asks for it, synchronous classification with the
policy's deadline (for fresh and L0 accounts, screening: a cascade whose first stage clears what
the contextual model would not flag, then the classifier on a short deadline, failing open,
one screening per account at a time: ``screen_turns``; an account on probation, the first
answered screenings of one this gate holds no command for, waits the longer probation deadline).
``observe`` runs after the response: it charges tokens to the GCRA and queues the metadata-only
signal and the content for scoring (never waiting on NATS); a prompt served without a score
(failed open) is marked ``served_unscored`` there, and the content stream scores it first.

With the region's link key, each request also carries its prompt's link key (an HMAC of the
normalised newest user turn, ``core.prompt_links``): the gate applies that prompt's enforcement
(once the classifier has flagged it from several accounts, a refusal) and the signal takes the
key, never the text, to the account's actor.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any

import anyio

from safeguards.adapters.bus.cross_signals import CrossSignalBoard
from safeguards.adapters.classifier.first_stage import FirstStage
from safeguards.adapters.csp.classify import SyncClassifier
from safeguards.adapters.csp.decision import (
    BLOCK_ACTION,
    Decision,
    GateRequest,
    GateResponse,
    StreamVerdict,
)
from safeguards.adapters.csp.gate import Gate
from safeguards.adapters.csp.gate_time import gate_now
from safeguards.adapters.csp.homes import HomeRouting
from safeguards.adapters.csp.identity import Caller
from safeguards.adapters.csp.metrics import CspMetrics
from safeguards.adapters.csp.provider_api import MESSAGES_CALL, ProviderCall
from safeguards.adapters.csp.screen_turns import QUEUE_FULL, QUEUE_WAIT, ScreenTurns
from safeguards.adapters.csp.telemetry import Telemetry
from safeguards.adapters.csp.turns import SeenTurns, newest_user_text, scoring_text
from safeguards.core.events import Scores
from safeguards.core.prompt_links import content_digest, prompt_link_key

# Request ids: a random per-process prefix and a counter (unique without a system call each).
_ID_PREFIX = secrets.token_hex(8)
# Why a prompt went unscored where the classifier is there but too busy (its score of the prompt
# comes late and is kept; another request of the account was being screened): a held prompt
# (``gate.hold_ms``) is refused with a retry-after for these, not served.
TOO_BUSY = frozenset({"classifier_timeout", "screen_classifier_timeout", QUEUE_WAIT, QUEUE_FULL})
# ... and only while the classifier answered some request this recently: one that has not (down,
# or hung) is not busy, and a held prompt fails as any other then.
ALIVE_S = 10.0
_ID_COUNTER = itertools.count()


def prompt_digest(secret: bytes | None, prompt: str) -> str:
    """The request's ``prompt_sha256``: ``core.prompt_links.content_digest`` of the scored text
    under the region's link key (the classifier keys ``content_sha256`` the same way)."""
    return content_digest(secret, prompt)


@dataclass(slots=True)
class Admitted:
    request: GateRequest
    decision: Decision
    doc: dict[str, Any]
    prompt: str


class Admission:
    def __init__(self, gate: Gate, classifier: SyncClassifier, telemetry: Telemetry,
                 metrics: CspMetrics, first_stage: FirstStage | None = None, *,
                 synced: anyio.Event | None = None, link_key: bytes | None = None) -> None:
        self.gate = gate
        self.link_key = link_key  # the region's (identity.load_link_key); None: no prompt links
        self.synced = synced  # set once the gate has read its region's enforcement
        self.classifier = classifier
        self.telemetry = telemetry
        self.first_stage = first_stage
        self.seen = SeenTurns()
        self.screen_turns = ScreenTurns()  # per-account turns at the screening classifier
        self.homes: HomeRouting | None = None  # accounts homed in another region (csp.homes)
        self.cross: CrossSignalBoard | None = None  # prompts other regions released as harmful
        self._observe_check = metrics.check_seconds.observe

    async def admit(self, caller: Caller, body: bytes, surface: str,
                    call: ProviderCall = MESSAGES_CALL, *, rated: bool = True) -> Admitted:
        """``body`` in ``call``'s provider shape (a Messages body by default); ``surface``: the
        front end (``proxy``, ``ext_proc``), to which the provider's API is added; ``rated``:
        charged to the account's request rate (a batch's requests after its first are not)."""
        parsed = call.api.parse(body, call)
        doc, conversation = parsed.doc, parsed.conversation
        # The newest turn in its context and whatever this process has not scored before for
        # the account: an earlier turn is never counted again on every follow-up.
        prompt = scoring_text(caller.account, conversation, self.seen)
        newest = newest_user_text(conversation)
        key, home, first = self.link_key, None, False
        if self.homes is not None:  # an account homed elsewhere is keyed as its home keys it
            home, first = await self.homes.lookup(caller.account)
            home_key = None if home is None else self.homes.link_key_of(home.home)
            if home_key is not None and key is not None:
                key, caller = home_key, caller.keyed_for(home_key)
        link = None if key is None else prompt_link_key(key, newest)
        request = GateRequest(caller.account, f"{_ID_PREFIX}{next(_ID_COUNTER):08x}",
                              model=parsed.model, streamed=parsed.streamed,
                              prompt_chars=len(prompt),
                              prompt_sha256=prompt_digest(key, prompt),
                              surface=call.surface(surface), organization_id=caller.organization_id,
                              project_id=caller.project_id,
                              api_key_fingerprint=caller.api_key_fingerprint, prompt_link=link,
                              rated=rated)
        if not self.gate.synced and self.synced is not None:
            # Fail-closed start: hold for the enforcement state a while, then the gate refuses.
            with anyio.move_on_after(self.gate.policy.gate.before_sync_hold_ms / 1000):
                await self.synced.wait()
        if self.homes is not None and home is not None:  # the home's enforcement applies
            await self.homes.follow(request, home, first)
        now = gate_now()
        t0 = time.perf_counter()
        if self.cross is not None and self.gate.synced and self.cross.released(newest):
            # k accounts elsewhere sent this prompt flagged (core.cross_signals): refused here
            self.cross.refused += 1
            decision = Decision(BLOCK_ACTION, "prompt_elsewhere", 0, 0, status=403)
            self.gate.count(decision)
        else:
            decision = self.gate.check(request, now)
            _mark(request, decision.fallback)
        self._observe_check(time.perf_counter() - t0)
        if decision.needs_classify:
            decision = await self._classify(request, decision, prompt)
        return Admitted(request, decision, doc, prompt)

    async def _classify(self, request: GateRequest, decision: Decision, prompt: str) -> Decision:
        gate_policy = self.gate.policy.gate
        if not decision.screen_only:  # the account's level asks for it: the policy's deadline,
            # ahead of ordinary screenings at the classifier as a fresh account's are: a flagged
            # account's check must not queue behind established accounts' screenings; one the
            # first stage holds waits longer, and is refused to retry if still unanswered
            held = gate_policy.hold_ms > 0 and self._holds(prompt)
            deadline_ms = gate_policy.classify_deadline_for(len(prompt))
            scores, failure = await self.classifier.classify(
                request.request_id, "prompt", prompt, first=True,
                deadline_ms=max(deadline_ms, gate_policy.hold_ms) if held else deadline_ms)
            return self._resolve(request, decision, scores, failure=failure or "classifier_error",
                                 busy_closed=held)
        # Screening: a short deadline, fail open; what it cannot score in time is served and
        # scored afterwards from the content stream like every request.
        if len(prompt) > gate_policy.screen_max_chars:
            return self._resolve(request, decision, None, failure="screen_too_long")
        holds = False  # the first stage's own score at its hold point
        if self.first_stage is not None and gate_policy.screen_first_stage:
            verdict = self.first_stage.check(prompt)
            counts = self.gate.first_stage_verdicts
            counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
            if verdict.clear:  # served without waiting on the classifier, scored afterwards
                return self._resolve(request, decision, (), clear_reason="first_stage_clear")
            holds = verdict.holds
        # One screening per account at the classifier at a time; its others wait their turn
        # (bounded), then each gets its full deadline: a burst cannot outrun its own screening
        # nor crowd out other accounts' (csp.screen_turns).
        # Probation: a fresh account's first screenings wait longer (its first harmful ask is
        # scored, not served for want of a score) and are scored ahead of the classifier's other
        # inline work (on saturated cores a queue of ordinary screenings would outlast even the
        # longer deadline); established accounts never are. Only an answered one counts: a
        # classifier overloaded at the start uses none up. One the first stage holds waits
        # longer still, and is refused with a retry-after if the classifier is too busy even
        # for that (``gate.hold_ms``): not served unscreened.
        probation = self.gate.probation(request.account_id)
        held = probation is not None and holds and gate_policy.hold_ms > 0
        async with self.screen_turns.turn(request.account_id,
                                          gate_policy.screen_account_queue_ms / 1000,
                                          gate_policy.screen_account_waiters) as missed:
            if missed:
                return self._resolve(request, decision, None, failure=missed, busy_closed=held)
            deadline_ms = gate_policy.screen_deadline_for(len(prompt))
            if probation is not None:
                deadline_ms = max(deadline_ms, gate_policy.probation_screen_deadline_ms,
                                  gate_policy.hold_ms if held else 0.0)
            scores, failure = await self.classifier.classify(
                request.request_id, "prompt", prompt, deadline_ms=deadline_ms,
                first=probation is not None)
            if probation is not None and scores is not None:
                probation.screened += 1
        return self._resolve(request, decision, scores,
                             failure=f"screen_{failure}" if failure else "screen_error",
                             busy_closed=held)

    def _holds(self, prompt: str) -> bool:
        """Whether the first stage holds ``prompt`` (its own score at its hold point)."""
        stage = self.first_stage
        return (stage is not None and self.gate.policy.gate.screen_first_stage
                and stage.check(prompt).holds)

    async def completion_check(self, request: GateRequest, completion: str) -> StreamVerdict:
        """Score the completion so far: its ``stop`` (a category, or ``fail_closed``) means end
        it now; its ``fallback``, what it fell back on (None: the completion was scored)."""
        scores, failure = await self.classifier.classify(
            request.request_id, "completion", completion,
            deadline_ms=self.gate.policy.gate.classify_deadline_ms)
        verdict = self.gate.stream_verdict(scores, failure=failure or "classifier_error")
        _mark(request, verdict.fallback)
        return verdict

    def _resolve(self, request: GateRequest, decision: Decision, scores: Scores | None, *,
                 failure: str = "classifier_timeout", clear_reason: str = "",
                 busy_closed: bool = False) -> Decision:
        """``busy_closed``: a held prompt, refused (529) if the classifier was too busy for it
        (``TOO_BUSY``)."""
        final = self.gate.resolve(decision, scores, failure=failure, clear_reason=clear_reason,
                                  fail_closed=busy_closed and failure in TOO_BUSY
                                  and self.classifier.replied_within(ALIVE_S))
        _mark(request, final.fallback)
        if final.reason == "fail_open":  # served unscored: its content is scored first
            request.served_unscored = True
        return final

    def observe(self, request: GateRequest, action: str, tokens_in: int, tokens_out: int,
                prompt: str, completion: str) -> bool:
        """Tokens charged, signal and content queued; False where the telemetry buffer did not
        take them (counted there)."""
        self.gate.observe(request, GateResponse(action, tokens_in, tokens_out), gate_now())
        return self.telemetry.emit_observed(request, action, tokens_in, tokens_out, prompt,
                                            completion)


def _mark(request: GateRequest, fallback: str | None) -> None:
    """The fallback a gate call returned for ``request``, marked on it (its RequestObserved
    signal carries it); a later fallback of the same request replaces an earlier one."""
    if fallback is not None:
        request.fallback = fallback
