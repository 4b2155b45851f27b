"""Pure-core fold rate over a synthetic 1M-event history.

The history mixes what a busy account accumulates: requests, scores, strikes, enforcement changes
and the occasional operator note, in realistic proportions. Only ``fold`` is timed (best and
median of several passes); building the history is not.

    python benchmarks/fold.py [--events 1000000] [--repeat 3] [--members N]

``--members N`` folds an organisation's history instead (``org:bench``): the same mix, each score
naming one of N member accounts in turn (the classifier's copy of a member's score), so the fold
also keeps the organisation's members (at most ``MAX_MEMBERS``: more come and go).

Last line: {"events_per_s": ..., "events_per_cpu_s": ...} (medians; the second counts only
this process's CPU time, steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from safeguards.core.events import (
    EnforcementChanged,
    Event,
    EventBody,
    OperatorActionTaken,
    RequestObserved,
    ScoreRecorded,
    StrikeRecorded,
)
from safeguards.core.state import fold, initial_state


def synthetic_history(n: int, account: str = "bench-acct", region: str = "eu",
                      members: int = 0) -> list[Event]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    request = RequestObserved("r", "model-x", "proxy", 50, 300, 200, "0" * 64, True, "allow")
    score = ScoreRecorded("r", "prompt", "1" * 64, 200, "default", "1",
                          (("jailbreak", 0.7), ("cyber", 0.1), ("weapons", 0.01)))
    strike = StrikeRecorded("jailbreak", 0.7, 0.7, 1.4, 86400.0, "strike.threshold", "r",
                            "default", "1", 2)
    change = EnforcementChanged(2, 1, t0 + timedelta(days=1), "points", "escalate.points", 2.0, 3)
    note = OperatorActionTaken("oncall", "note", None, None, "looked at it")
    pair: list[EventBody] = [request, score]
    cycle: list[EventBody] = [*pair * 20, strike, change, note]
    events = []
    for i in range(n):
        body = cycle[i % len(cycle)]
        if body is score:  # distinct content each time, as a real account's (the fold keeps the
            # recent hashes, so a constant one would measure the cheap path)
            body = replace(score, content_sha256=f"{i:064x}",
                           member_account=f"member-{i % members:05d}" if members else None)
        events.append(Event(f"e{i}", account, region, i + 1, t0 + timedelta(seconds=i), f"s{i}",
                            "c", None, body))
    return events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--members", type=int, default=0)
    args = parser.parse_args()
    account = "org:bench" if args.members else "bench-acct"
    history = synthetic_history(args.events, account, members=args.members)
    rates, cpu_rates = [], []
    for _ in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        state = fold(initial_state(account, "eu"), history)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert state.version == args.events
        rates.append(args.events / elapsed)
        cpu_rates.append(args.events / cpu)
        print(f"fold of {args.events:,} events: {elapsed:.3f} s, {rates[-1]:,.0f} events/s "
              f"({cpu_rates[-1]:,.0f} per CPU second)")
    print(f"median {statistics.median(rates):,.0f} events/s, best {max(rates):,.0f} events/s")
    # per CPU second too: on a shared machine the wall clock also counts other processes' turns
    print(json.dumps({"events_per_s": round(statistics.median(rates)),
                      "events_per_cpu_s": round(statistics.median(cpu_rates)),
                      "members": args.members}))


if __name__ == "__main__":
    main()
