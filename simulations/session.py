"""One simulation: plan, send through the real proxies, let the pipeline settle, score."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import anyio

from safeguards.core.events import Event
from safeguards.core.ids import organization_entity
from safeguards.core.ports import EventStore
from safeguards.simulations.personas import Persona
from safeguards.simulations.plan import PlannedRequest, plan
from safeguards.simulations.runner import Progress, TraceRecord, run_plan, write_trace
from safeguards.simulations.score import (
    AccountOutcome,
    PersonaScore,
    merge_outcomes,
    plot_svg,
    score_account,
    score_personas,
    summary,
    table,
)


@dataclass(frozen=True, slots=True)
class SimulationResult:
    run_id: str
    trace: list[TraceRecord]
    accounts: list[AccountOutcome]
    personas: list[PersonaScore]

    @property
    def summary(self) -> dict[str, float]:
        return summary(self.personas)

    def table(self) -> str:
        return table(self.personas)

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        trace_path = out_dir / f"trace-{self.run_id}.jsonl"
        plot_path = out_dir / f"scores-{self.run_id}.svg"
        write_trace(self.trace, trace_path)
        plot_path.write_text(plot_svg(self.personas), "utf-8")
        return trace_path, plot_path


async def settle(stores: dict[str, EventStore], *, quiet_s: float = 2.0,
                 timeout_s: float = 60.0) -> None:
    """Wait until no region's feed has grown for ``quiet_s``: scores and decisions in flight
    (content stream -> classifier -> actors) have landed."""
    positions: dict[str, int] = {r: 0 for r in stores}
    last_change = time.monotonic()
    deadline = last_change + timeout_s
    while time.monotonic() < deadline:
        changed = False
        for region, store in stores.items():
            while True:
                page = await store.read_feed(positions[region], 5000)
                if not page:
                    break
                positions[region] = page[-1].position
                changed = True
        now = time.monotonic()
        if changed:
            last_change = now
        elif now - last_change >= quiet_s:
            return
        await anyio.sleep(0.25)


async def score_run(trace: list[TraceRecord], stores: dict[str, EventStore]
                    ) -> list[AccountOutcome]:
    by_account: dict[str, list[TraceRecord]] = defaultdict(list)
    for r in trace:
        by_account[r.account].append(r)
    outcomes = []
    organizations: dict[tuple[str, str], list[Event]] = {}

    async def scored(region: str, records: list[TraceRecord], history: list[Event]
                     ) -> AccountOutcome:
        organization = records[0].organization
        organization_history = None
        if organization is not None:
            key = (region, organization)
            if key not in organizations:
                organizations[key] = await stores[region].history(
                    organization_entity(organization))
            organization_history = organizations[key]
        return score_account(records, history, organization_history)

    for account, records in sorted(by_account.items()):
        # An account served in several regions has one history, in its home, when home
        # routing works; where each region kept its own, each region's requests are scored
        # against the enforcement that region applied, and the account's outcome adds up.
        regions = sorted({r.region for r in records})
        histories = {region: await stores[region].history(account) for region in regions}
        kept = {region: h for region, h in histories.items() if h}
        if len(kept) <= 1:
            home = next(iter(kept), records[0].region)
            outcomes.append(await scored(home, records, kept.get(home, [])))
        else:
            outcomes.append(merge_outcomes([
                await scored(region, [r for r in records if r.region == region], history)
                for region, history in kept.items()]))
    return outcomes


async def simulate(personas: list[Persona], proxies: dict[str, str],
                   stores: dict[str, EventStore], *, run_id: str, seed: int = 7,
                   speed: float = 1.0, requests: list[PlannedRequest] | None = None,
                   show_progress: bool = True) -> SimulationResult:
    planned = requests if requests is not None else plan(personas, run_id, seed)
    missing = {r.region for r in planned} - proxies.keys()
    if missing:
        raise ValueError(f"no proxy for region(s) {sorted(missing)}")
    progress = Progress(len(planned)) if show_progress else None
    trace = await run_plan(planned, proxies, speed=speed,
                           on_record=progress.add if progress else None)
    await settle(stores)
    accounts = await score_run(trace, stores)
    return SimulationResult(run_id, trace, accounts, score_personas(accounts))
