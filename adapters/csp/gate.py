"""The inline gate: a local enforcement cache, GCRA rate limits, and the per-request decision.

Everything here is synchronous and allocation-light, because ``check`` runs on the serving path of
every request: one dict lookup, a few float comparisons, and a decision object that was built when
the account's enforcement command arrived (only a throttle allocates, for its ``retry-after``).
Time is passed in as Unix seconds, so tests and benchmarks drive the clock.

Flow per request::

    decision = gate.check(request, now)          # fast, never waits
    if decision.needs_classify:                  # screening (L0, short deadline, fail open) or
        scores = await classify(...)             # the level's sync scoring; caller's I/O
        decision = gate.resolve(decision, scores, now, failure)
    ... serve / refuse ...
    gate.observe(request, response, now)         # charges tokens to the token GCRA

Counters (decisions by action and reason, fallbacks by cause and mode) are plain ints read by the
Prometheus collector at scrape time, so the hot path never touches a metrics library. A fallback
is also returned with what it led to (``Decision.fallback``, ``StreamVerdict.fallback``), for the
caller to mark on its request: the gate keeps no per-request state between calls.
"""

from __future__ import annotations

import math

from safeguards.adapters.csp.decision import (
    ALLOW,
    ANNOTATE,
    ANNOTATE_ACTION,
    BLOCK,
    BLOCK_ACTION,
    CLASSIFIER_FORGED,
    INTERVENE,
    INTERVENE_ACTION,
    SCREEN,
    SYNC_CLASSIFY,
    THROTTLE_ACTION,
    Decision,
    GateRequest,
    GateResponse,
    StreamVerdict,
    flags_of,
)
from safeguards.adapters.csp.gate_counters import GateCounters
from safeguards.adapters.csp.gate_entry import (
    CacheEntry,
    carry_usage,
    epoch,
    interval,
)
from safeguards.adapters.csp.shared_rates import SharedRates
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.events import Scores
from safeguards.core.ids import aggregate_kind
from safeguards.core.policy import Policy

DEFAULT_MAX_UNCOMMANDED = 200_000  # rate state kept for accounts without a command
_GO_ON = StreamVerdict(None)  # the stream goes on, no fallback taken


class Gate(GateCounters):
    """The per-region inline gate: enforcement cache + rate limits + decisions + counters."""

    def __init__(self, policy: Policy, *, max_uncommanded: int = DEFAULT_MAX_UNCOMMANDED) -> None:
        self._decisions: dict[tuple[str, str, int, int, bool, str | None], Decision] = {}
        self.set_policy(policy)
        self._commanded: dict[str, CacheEntry] = {}
        self._uncommanded: dict[str, CacheEntry] = {}
        self._expired: dict[str, int] = {}  # version floor of accounts whose command expired
        self._max_uncommanded = max_uncommanded
        self.last_contact = -math.inf  # Unix seconds of the last message/heartbeat from the stream
        GateCounters.__init__(self)
        self.rates: SharedRates | None = None  # worker processes' shared GCRA (shared_rates)
        self.commands_applied = 0
        self.commands_ignored = 0
        # False until the region's enforcement has been read (the feed's initial state or a
        # verified local snapshot); until then every request is refused (fail-closed start). A
        # gate without a feed (tests, benchmarks) is synced by whoever applies its commands.
        self.synced = True

    def set_policy(self, policy: Policy) -> None:
        """Apply a (new) policy: thresholds, kill switches, the region's mode and the default
        tier. Commands in the cache keep the level, rates and interventions they carry."""
        self.policy = policy
        self.max_staleness_s = policy.gate.max_staleness_s
        enabled = policy.enabled_categories
        if policy.mode == "fail_open":
            closed: set[str] = set()
        elif policy.mode == "fail_closed":
            closed = {c.name for c in enabled}
        else:
            closed = {c.name for c in enabled if c.on_unavailable == "closed"}
        self._closed = tuple(sorted(closed))
        self._enabled = frozenset(c.name for c in enabled)
        # per level: (category, intervene at: threshold x the rung's classify_threshold_scale,
        # refuse at: the category's refuse_threshold, or its threshold where the rung says so,
        # fails closed)
        self._thresholds = tuple(
            tuple((c.name, c.threshold * rung.classify_threshold_scale,
                   c.threshold if rung.refuse_from_threshold else c.refuse_threshold,
                   c.name in closed and (rung.fail_closed or policy.mode == "fail_closed"))
                  for c in enabled)
            for rung in policy.ladder)
        self._override = policy.mode if policy.mode in ("refuse", "shadow") else None
        tier0 = policy.rate_tiers[0]
        self._default_req_interval = interval(tier0.requests_per_minute)
        self._default_tok_interval = interval(tier0.tokens_per_minute)
        self._default_ok = self._ok_decision(0, flags_of(policy.ladder[0].interventions))

    # --- the cache ------------------------------------------------------------------------------

    def _intern(self, action: str, reason: str, level: int, flags: int,
                needs_classify: bool = False, status: int = 200,
                fallback: str | None = None) -> Decision:
        key = (action, reason, level, flags, needs_classify, fallback)
        found = self._decisions.get(key)
        if found is None:
            found = Decision(action, reason, level, flags, needs_classify=needs_classify,
                             status=status, fallback=fallback)
            self._decisions[key] = found
        return found

    def _fell_back(self, decision: Decision, fallback: str) -> Decision:
        """A standing ``decision`` (not a throttle) reached through ``fallback``."""
        return self._intern(decision.action, decision.reason, decision.level, decision.flags,
                            decision.needs_classify, decision.status, fallback)

    def _ok_decision(self, level: int, flags: int, scope: str = "") -> Decision:
        """The standing decision of a level; ``scope`` ("org_", "key_", "prompt_") marks an
        aggregate's."""
        named = f"{scope}level_{level}"
        if flags & BLOCK:
            return self._intern(BLOCK_ACTION, named, level, flags, status=403)
        if flags & (SYNC_CLASSIFY | SCREEN):  # the action it keeps if the classifier clears it
            action = (INTERVENE_ACTION if flags & INTERVENE
                      else ANNOTATE_ACTION if flags & ANNOTATE else ALLOW)
            return self._intern(action, "ok" if level == 0 else named, level, flags, True)
        if flags & INTERVENE:
            return self._intern(INTERVENE_ACTION, named, level, flags)
        if flags & ANNOTATE:
            return self._intern(ANNOTATE_ACTION, named, level, flags)
        return self._intern(ALLOW, "ok" if level == 0 else named, level, flags)

    def apply(self, command: EnforcementCommand, now: float | None = None, *,
              authoritative: bool = False) -> bool:
        """Install ``command`` if it is newer than what the cache holds; True when applied.

        ``now`` (Unix seconds) carries the account's recent usage over to the new tier: the
        requests and tokens it spent in the current window count against the new rates.
        ``authoritative``: the stream's own last value replacing what a local snapshot restored
        (applied whatever its version: the stream, not an old snapshot, is the truth).
        """
        account = command.account_id
        entry = self._commanded.get(account)
        floor = entry.version if entry is not None else self._expired.get(account)
        if floor is not None and command.version <= floor and not (
                authoritative and command.version != floor):
            self.commands_ignored += 1
            return False
        self._expired.pop(account, None)
        kind = aggregate_kind(account)
        ok = self._ok_decision(command.level, flags_of(command.interventions),
                               f"{kind}_" if kind else "")
        fresh = CacheEntry(command.level, command.version, epoch(command.expires_at),
                       interval(command.requests_per_minute),
                       interval(command.tokens_per_minute), ok)
        previous = entry or self._uncommanded.pop(account, None)
        if previous is not None and now is not None:
            carry_usage(previous, fresh, now)
        self._commanded[account] = fresh
        self.commands_applied += 1
        return True

    def forget(self, account_id: str) -> None:
        """Drop an account's command (one a snapshot restored that the stream no longer has)."""
        self._commanded.pop(account_id, None)

    def held_version(self, account_id: str) -> int | None:
        entry = self._commanded.get(account_id)
        return None if entry is None else entry.version

    def level_of(self, account_id: str, now: float) -> int:
        entry = self._commanded.get(account_id)
        return 0 if entry is None or entry.expires <= now else entry.level

    def probation(self, account_id: str) -> CacheEntry | None:
        """The account's entry if a screening of it starting now is on probation (this gate never
        held a command for it: ``CacheEntry.start_probation``); the caller counts an answer."""
        entry = self._uncommanded.get(account_id)
        if entry is None or account_id in self._expired:
            return None
        return entry if entry.start_probation(self.policy.gate.probation_requests) else None

    @property
    def size(self) -> int:
        return len(self._commanded)

    def touch(self, now: float) -> None:
        """The enforcement stream spoke (a message or a heartbeat)."""
        self.last_contact = now

    def staleness(self, now: float) -> float:
        return now - self.last_contact

    # --- the decision ---------------------------------------------------------------------------

    def check(self, request: GateRequest, now: float) -> Decision:
        if not self.synced:  # what we know of every account is nothing yet: refuse, never L0
            refused = self._intern(BLOCK_ACTION, "not_synced", 0, 0, status=503,
                                   fallback=self._fallback("not_synced", "closed"))
            self._count(refused)
            return refused
        if self._override is None:
            return self._check(request, now)
        if self._override == "refuse":  # the region's emergency stop
            refused = self._intern(BLOCK_ACTION, "policy_refuse", 0, 0, status=403)
            self._count(refused)
            return refused
        # shadow: what the gate would have done is counted; the request is served as it is
        would = self._check(request, now)
        key = (f"shadow_{would.action}", would.reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        served = self._intern(ALLOW, "shadow", would.level, 0, fallback=would.fallback)
        self._count(served)
        return served

    def _check(self, request: GateRequest, now: float) -> Decision:
        account = request.account_id
        entry = self._commanded.get(account)
        if entry is None or entry.expires <= now:
            if entry is not None:  # expired: back to the default tier, keep the usage
                del self._commanded[account]
                self._expired[account] = entry.version  # a replay of it must not return
                expired = entry
                entry = self._new_uncommanded(account)
                carry_usage(expired, entry, now)
            else:
                entry = self._uncommanded.get(account)
                if entry is None:
                    entry = self._new_uncommanded(account)
            ok = self._default_ok
        else:
            ok = entry.ok
        if request.aggregates:
            ok = self._with_aggregates(ok, request.aggregates, now)
        if now - self.last_contact > self.max_staleness_s:
            if ok.flags & SYNC_CLASSIFY and self._closed:
                # What we know of an account under screening may be out of date: the policy's
                # fail-closed categories refuse rather than serve on stale knowledge.
                refused = self._stale_closed(ok, self._fallback("stale_cache", "closed"))
                self._count(refused)
                return refused
            ok = self._fell_back(ok, self._fallback("stale_cache", "open"))
        if ok.status != 200:
            self._count(ok)
            return ok
        # GCRA (this process's, or the quota its worker processes share)
        if request.rated:
            throttled = (entry.take(now) if self.rates is None
                         else self.rates.take(account, now, entry.req_interval))
            if throttled is not None:
                return self._throttle(ok, *throttled)
        if not ok.needs_classify:
            self._count(ok)
        return ok

    def _with_aggregates(self, ok: Decision, aggregates: tuple[str, ...], now: float) -> Decision:
        """The strictest standing decision among the account's and its aggregates' (organisation,
        API key, prompt): a refusal before anything served, then the highest level. An
        aggregate's enforcement applies to every request that names it (a prompt refused at L2
        stays refused for an account at L3, whose own rung would serve it)."""
        for aggregate in aggregates:
            held = self._commanded.get(aggregate)
            if held is not None and held.expires > now and (
                    (held.ok.refused, held.level) > (ok.refused, ok.level)):
                ok = held.ok
        return ok

    def peek(self, account_id: str, now: float, aggregates: tuple[str, ...] = ()) -> Decision:
        """The account's standing decision (or an aggregate's, where higher) without charging
        its rate limits or counting it (for a front end that sees headers before the body,
        e.g. ext_proc)."""
        if self._override == "refuse":
            return self._intern(BLOCK_ACTION, "policy_refuse", 0, 0, status=403)
        entry = self._commanded.get(account_id)
        ok = self._default_ok if entry is None or entry.expires <= now else entry.ok
        ok = self._with_aggregates(ok, aggregates, now) if aggregates else ok
        return self._intern(ALLOW, "shadow", ok.level, 0) if self._override else ok

    def count(self, decision: Decision) -> None:
        """Count a decision a front end acted on without going through ``check``."""
        self._count(decision)

    def _stale_closed(self, ok: Decision, fallback: str) -> Decision:
        return self._intern(BLOCK_ACTION, "fail_closed", ok.level, ok.flags, status=529,
                            fallback=fallback)

    def _new_uncommanded(self, account: str) -> CacheEntry:
        if len(self._uncommanded) >= self._max_uncommanded:
            # Forget the oldest rate history (dicts keep insertion order): bounded memory.
            del self._uncommanded[next(iter(self._uncommanded))]
        entry = CacheEntry(0, 0, math.inf, self._default_req_interval, self._default_tok_interval,
                       self._default_ok)
        self._uncommanded[account] = entry
        return entry

    def _throttle(self, ok: Decision, reason: str, retry_after_s: float) -> Decision:
        retry = 60.0 if math.isinf(retry_after_s) else retry_after_s
        decision = Decision(THROTTLE_ACTION, reason, ok.level, ok.flags, status=429,
                            retry_after_s=retry, fallback=ok.fallback)
        self._count(decision)
        return decision

    def resolve(self, decision: Decision, scores: Scores | None, *,
                failure: str = "classifier_timeout", clear_reason: str = "",
                fail_closed: bool = False) -> Decision:
        """The final decision once synchronous classification answered (or did not); its
        ``fallback``: the one taken here, else ``decision``'s. ``clear_reason``: what cleared it
        when no score did (the first stage); ``fail_closed``: no score refuses (529) anyway."""
        if not decision.needs_classify:
            return decision
        if scores is None and failure.endswith(CLASSIFIER_FORGED):  # screen_ prefix or not
            # An answer that is not the region's classifier's: the path is under attack, and
            # serving on it would let the attacker choose; refuse, even under screening.
            final = self._stale_closed(decision, self._fallback(failure, "closed"))
            self._count(final)
            return final
        present = dict(scores) if scores is not None else {}
        closed_missing: list[str] = []
        borderline = refused = ""
        top = -1.0
        # Screening fails open but for ``fail_closed`` (a held prompt the classifier was too
        # busy for); else only an account the policy classifies is refused for want of a score.
        may_close = not decision.screen_only
        for name, intervene_at, refuse_at, closed in self._thresholds[decision.level]:
            score = present.get(name)
            if score is None:
                if closed and may_close:
                    closed_missing.append(name)
                continue
            if score >= intervene_at and score > top:  # the request's own (highest) category
                top = score
                borderline, refused = name, (name if score >= refuse_at else "")
        carried = decision.fallback  # one ``check`` took (a stale cache served on)
        if refused:  # high confidence in this request's own category
            final = self._intern(BLOCK_ACTION, f"classified_{refused}", decision.level,
                                 decision.flags, status=403, fallback=carried)
            self._count(final)
            return final
        if scores is None or closed_missing:
            closed = bool(closed_missing) or (scores is None and fail_closed)
            fallback = self._fallback(failure, "closed" if closed else "open")
            if closed:
                final = self._intern(BLOCK_ACTION, "fail_closed", decision.level, decision.flags,
                                     status=529, fallback=fallback)
                self._count(final)
                return final
            final = self._intern(decision.action, "fail_open", decision.level, decision.flags,
                                 fallback=fallback)
            self._count(final)
            return final
        if borderline:  # served, with the safety system prompt: proportionate, not refused
            final = self._intern(INTERVENE_ACTION, f"borderline_{borderline}", decision.level,
                                 decision.flags | INTERVENE, fallback=carried)
        else:
            final = self._intern(decision.action, clear_reason or (
                "screened_clear" if decision.screen_only else "classified_clear"),
                decision.level, decision.flags, fallback=carried)
        self._count(final)
        return final

    def stream_verdict(self, scores: Scores | None, *,
                       failure: str = "classifier_timeout") -> StreamVerdict:
        """Whether a stream must end (``stop``: a category name or ``fail_closed``; None: it goes
        on), with the fallback taken when there are no scores."""
        threshold = self.policy.gate.stream_stop_threshold
        if scores is None:
            closed = bool(self._closed)
            fallback = self._fallback(failure, "closed" if closed else "open")
            return StreamVerdict("fail_closed" if closed else None, fallback)
        for name, score in scores:
            if score >= threshold and name in self._enabled:
                return StreamVerdict(name)
        return _GO_ON

    def observe(self, request: GateRequest, response: GateResponse, now: float) -> None:
        """Charge the response's tokens to the account's token GCRA."""
        entry = self._commanded.get(request.account_id) or self._uncommanded.get(
            request.account_id)
        if entry is None:
            entry = self._new_uncommanded(request.account_id)
        tokens = response.input_tokens + response.output_tokens
        if tokens <= 0:
            return
        if self.rates is not None:
            self.rates.charge(request.account_id, now, tokens * entry.tok_interval)
        else:
            tat = entry.tok_tat if entry.tok_tat > now else now
            entry.tok_tat = tat + tokens * entry.tok_interval
