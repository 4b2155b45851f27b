"""``safeguards ops timeline``: a region's postmortem report, one self-contained HTML file.

    safeguards ops timeline --region eu --since -24h --until now --out report.html
    safeguards ops timeline --region eu --since 2026-12-01T08:00Z --until 2026-12-01T14:00Z \\
        --operator alice --nats nats://... --out incident-17.html

Fail-open/closed windows, enforcement lag, dead letters, enforcement changes by rule and
operator actions in the window, with plots (``ops.postmortem``). Times: ISO 8601 with a zone,
``now``, or ``-N`` s/m/h/d before now (``--since -24h``); a window is at most 31 days. The
reader (``--operator``, else $SAFEGUARDS_OPERATOR, else the OS user) must be an analyst or admin
registered in the region, and the read is recorded (signed where they hold their key) before
anything is read.
Database as for ``ops history``; NATS (``--nats``, default $SAFEGUARDS_NATS_URL) for the
dead-letter stream: without it, the report says dead letters were not read.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safeguards.core.errors import SafeguardsError
from safeguards.core.ids import validate_region
from safeguards.ops.cli import DB_HELP, _fail, _run, audited_store, reader


def register_ops(ops_sub: Any) -> None:
    timeline = ops_sub.add_parser(
        "timeline", help="a region's postmortem report (fail-open windows, lag, dead letters, "
                         "enforcement by rule, operator actions) as self-contained HTML")
    timeline.add_argument("--region", required=True, help="the residency region")
    timeline.add_argument("--since", required=True,
                          help="ISO 8601 time with a zone, or relative: -24h, -90m, -7d")
    timeline.add_argument("--until", default="now", help="as --since (default: now)")
    timeline.add_argument("--out", type=Path, required=True, help="where to write the report")
    timeline.add_argument("--operator", default=None,
                          help="who reads (default: $SAFEGUARDS_OPERATOR, else the OS user)")
    timeline.add_argument("--database-url", default=None, help=DB_HELP)
    timeline.add_argument("--nats", default=None,
                          help="the region's NATS, for dead letters ($SAFEGUARDS_NATS_URL)")
    # ``--since -24h``: argparse takes a value that starts with "-" for an option unless it
    # looks like a negative number; here -N[smhd] does (no option of this parser does)
    timeline._negative_number_matcher = re.compile(r"^-\d+[smhd]?$|^-\d*\.\d+$")
    timeline.set_defaults(handler=_timeline)


async def build_postmortem(args: argparse.Namespace) -> Any:
    """The report's figures, once the reader's role is checked and the read recorded."""
    from safeguards.ops.postmortem import (
        check_reader,
        check_window,
        new_postmortem,
        parse_when,
        read_dead_letters,
        read_store,
    )

    region = validate_region(args.region)
    now = datetime.now(UTC)
    since, until = parse_when(args.since, now), parse_when(args.until, now)
    check_window(since, until)
    check_reader(region, reader(args))
    pm = new_postmortem(region, since, until)
    store = await audited_store(args, f"region:{region} {since.isoformat()}.."
                                      f"{until.isoformat()}", pool_size=1)
    try:
        await read_store(store, pm)
    finally:
        await store.close()
    await read_dead_letters(args.nats or os.environ.get("SAFEGUARDS_NATS_URL"), pm)
    return pm


def _timeline(args: argparse.Namespace) -> int:
    from safeguards.ops.postmortem_html import postmortem_html

    try:
        pm = _run(build_postmortem, args)
    except SafeguardsError as exc:
        return _fail(exc)
    args.out.write_text(postmortem_html(pm, reader(args), datetime.now(UTC)), "utf-8")
    if pm.dead_letter_problem:
        print(f"warning: dead letters {pm.dead_letter_problem}", file=sys.stderr)
    print(f"wrote {args.out}: {sum(pm.requests)} requests, {len(pm.windows)} fallback "
          f"window(s), {sum(m.changes for m in pm.rules.values())} enforcement changes, "
          f"{sum(pm.dead_per_bucket)} dead letters, {sum(pm.operator_counts.values())} "
          "operator actions")
    return 0
