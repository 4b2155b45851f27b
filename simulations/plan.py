"""Turns personas into a concrete, reproducible request plan (seeded; no clock)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from safeguards.simulations.personas import Persona


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    persona: str
    kind: str
    account: str
    region: str
    seq: int  # position within the account's own requests
    offset_s: float  # when to send, relative to the start of the run
    prompt: str
    harmful: bool
    stream: bool
    abusive_volume: bool
    organization: str | None = None  # the organisation the CSP names with the request


def account_name(run_id: str, persona: str, index: int) -> str:
    return f"sim-{run_id}-{persona}-{index}"


def organization_name(run_id: str, persona: Persona, index: int) -> str | None:
    if persona.organization == "shared":
        return f"sim-{run_id}-{persona.name}"
    if persona.organization == "per_account":
        return f"sim-{run_id}-{persona.name}-{index}"
    return None


def plan_persona(persona: Persona, run_id: str, seed: int) -> list[PlannedRequest]:
    rng = random.Random(f"{seed}:{persona.name}")
    weights = [p.weight for p in persona.prompts]
    out = []
    turn_s = persona.requests_per_account * persona.interval_s  # one account's share (rotation)
    for a in range(persona.accounts):
        account = account_name(run_id, persona.name, a)
        organization = organization_name(run_id, persona, a)
        region = persona.regions[a % len(persona.regions)]
        start = rng.uniform(0, max(persona.interval_s, 0.05))
        if persona.rotate:
            start += a * turn_s
        for seq in range(persona.requests_per_account):
            template = rng.choices(persona.prompts, weights)[0]
            values = {k: rng.choice(v) for k, v in persona.vars.items()}
            prompt = template.template.format(**values)
            if persona.hop:  # the same account through each region's proxy in turn
                region = persona.regions[(a + seq) % len(persona.regions)]
            out.append(PlannedRequest(persona.name, persona.kind, account, region, seq,
                                      start + seq * persona.interval_s, prompt, template.harmful,
                                      rng.random() < persona.stream_fraction,
                                      persona.abusive_volume, organization))
    return out


def plan(personas: list[Persona], run_id: str, seed: int = 7) -> list[PlannedRequest]:
    requests = [r for p in personas for r in plan_persona(p, run_id, seed)]
    return sorted(requests, key=lambda r: (r.offset_s, r.account, r.seq))
