"""``ops rca``: a self-contained HTML root-cause report for one account.

One file, no external assets: an inline SVG timeline (classifier scores per category, strikes,
the enforcement level as a step line) and a table of every decision with its rule, reason and
policy version, each with its explanation. Content never appears: only hashes and lengths.
"""

from __future__ import annotations

import html
from datetime import datetime

from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    ShadowDecision,
    StrikeRecorded,
)
from safeguards.core.state import AccountState
from safeguards.ops.explain import base_line, erasure_line, explain, render

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f")
W, H, PAD = 960, 320, 48


def _x(at: datetime, t0: datetime, span: float) -> float:
    return PAD + (W - 2 * PAD) * ((at - t0).total_seconds() / span if span else 0.5)


def timeline_svg(history: list[Event], start_level: int = 0) -> str:
    if not history:
        return "<p>No events.</p>"
    t0, t1 = history[0].occurred_at, history[-1].occurred_at
    span = (t1 - t0).total_seconds()

    def score_y(score: float) -> float:
        return H - PAD - (H - 2 * PAD) * score

    def level_y(lv: int) -> float:
        return H - PAD - (H - 2 * PAD) * lv / 5

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
             f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for lv in range(6):
        y = level_y(lv)
        parts.append(f'<text x="{W - PAD + 4}" y="{y + 4:.1f}" fill="#444">L{lv}</text>')
    for frac in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{PAD - 30}" y="{score_y(frac) + 4:.1f}" fill="#444">{frac}</text>')
    colours: dict[str, str] = {}
    level = start_level  # a truncated history's starts at its retention base's
    level_points: list[tuple[float, float]] = [(PAD, level_y(level))]
    for e in history:
        x = _x(e.occurred_at, t0, span)
        body = e.body
        if isinstance(body, ScoreRecorded) and not body.shadow:
            for cat, score in body.scores:
                colour = colours.setdefault(cat, PALETTE[len(colours) % len(PALETTE)])
                if score >= 0.05:
                    parts.append(f'<circle cx="{x:.1f}" cy="{score_y(score):.1f}" r="2.5" '
                                 f'fill="{colour}" fill-opacity="0.7"><title>v{e.version} '
                                 f'{html.escape(cat)} {score:.3f}</title></circle>')
        elif isinstance(body, StrikeRecorded):
            colour = colours.setdefault(body.category, PALETTE[len(colours) % len(PALETTE)])
            y = score_y(body.score)
            parts.append(f'<path d="M{x - 5:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 5:.1f} '
                         f'M{x - 5:.1f},{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" stroke="{colour}" '
                         f'stroke-width="2"><title>v{e.version} strike '
                         f'{html.escape(body.category)} +{body.points:.2f}</title></path>')
        elif isinstance(body, EnforcementChanged):
            level_points.append((x, level_y(level)))
            level = body.level
            level_points.append((x, level_y(level)))
    level_points.append((W - PAD, level_y(level)))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in level_points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="#000" stroke-width="2"/>')
    for i, (cat, colour) in enumerate(colours.items()):
        parts.append(f'<rect x="{PAD + i * 110}" y="14" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{PAD + i * 110 + 14}" y="23">{html.escape(cat)}</text>')
    parts.append(f'<text x="{PAD}" y="{H - 14}">{t0.isoformat()}</text>')
    parts.append(f'<text x="{W - PAD}" y="{H - 14}" text-anchor="end">{t1.isoformat()}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _decision_rows(history: list[Event], base: AccountState | None) -> str:
    rows = []
    for e in history:
        body = e.body
        if isinstance(body, EnforcementChanged):
            what = f"L{body.previous_level} &rarr; L{body.level}"
            rule, reason = body.rule_id, body.reason
            detail = render(explain(history, e.version, base))
        elif isinstance(body, StrikeRecorded):
            what = f"strike {html.escape(body.category)} +{body.points:.2f}"
            rule, reason = body.rule_id, f"score {body.score:.3f}, total {body.total_after:.2f}"
            detail = ""
        elif isinstance(body, ShadowDecision):
            what = f"shadow: would be L{body.would_level}"
            rule, reason, detail = body.rule_id, body.reason, ""
        elif isinstance(body, OperatorActionTaken):
            what = f"operator {html.escape(body.action)}"
            rule, reason, detail = body.operator, body.reason, ""
        elif isinstance(body, ApprovalRequested):
            what = f"approval requested: {html.escape(body.action)} to L{body.level}"
            rule, reason, detail = body.operator, body.reason, ""
        elif isinstance(body, ApprovalGranted):
            what = f"approved: {html.escape(body.action)} to L{body.level}"
            rule, reason, detail = body.approver, body.reason, f"asked by {body.operator}"
        elif isinstance(body, ReviewRequested):
            what = f"review: proposes L{body.proposed_level}"
            rule, reason, detail = body.rule_id, body.reason, ""
        elif isinstance(body, ReviewClaimed):
            what = "review claimed"
            rule, reason, detail = body.operator, body.reason, ""
        elif isinstance(body, AccountLinked):
            what = f"linked to {html.escape(body.aggregate)}"
            rule, reason, detail = body.rule_id, _link_reason(body), ""
        elif isinstance(body, AggregateEnforced):
            what = f"linked {html.escape(body.aggregate)} at L{body.level}"
            rule, reason = body.rule_id, (f"the aggregate it is linked to was enforced (its "
                                          f"v{body.aggregate_version})")
            detail = ""
        elif isinstance(body, AccountErased):
            what = "erased"
            rule, reason, detail = body.operator, erasure_line(e), ""
        elif isinstance(body, MemberLinked):
            what = f"member {html.escape(body.member_account)}"
            rule, reason, detail = "", f"linked by its {body.link.replace('_', ' ')}", ""
        elif isinstance(body, LinkedEpisode):
            what = f"linked enforcement {body.phase} at L{body.level}"
            rule, reason = "link.enforced", (f"trigger L{body.trigger_level}; "
                                             f"its newest {body.reach} member(s) told at once")
            detail = ""
        else:
            continue
        rows.append(
            f"<tr><td>{e.version}</td><td>{e.occurred_at.isoformat()}</td><td>{what}</td>"
            f"<td>{html.escape(rule)}</td><td>{html.escape(reason)}</td>"
            f"<td>{html.escape(e.policy_version or '')}</td>"
            f"<td>{'<details><summary>chain</summary><pre>' + html.escape(detail) + '</pre></details>' if detail else ''}</td></tr>"  # noqa: E501
        )
    return "\n".join(rows)


def _link_reason(body: AccountLinked) -> str:
    if body.link == "prompt":
        return (f"request {body.request_id}'s prompt was flagged: its score also counts in the "
                "history of that prompt (a keyed hash of it, no text), with every other account "
                "that sent it flagged")
    return f"first request naming its {body.link.replace('_', ' ')}"


def rca_html(account_id: str, region: str, history: list[Event], generated_at: datetime,
             base: AccountState | None = None) -> str:
    """``history``: the account's kept events; ``base``: its retention base where retention
    truncated it (the report starts there and says so)."""
    counts: dict[str, int] = {}
    for e in history:
        counts[e.type] = counts.get(e.type, 0) + 1
    summary = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    final = next((e.body for e in reversed(history) if isinstance(e.body, EnforcementChanged)),
                 None)
    level = f"L{final.level}" if final else f"L{base.level if base else 0}"
    start = "" if base is None else f"<p><b>Retention</b>: {html.escape(base_line(base))}.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>RCA {html.escape(account_id)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }}
pre {{ font-size: 12px; white-space: pre-wrap; }}
</style></head><body>
<h1>Root-cause report: account {html.escape(account_id)}</h1>
<p>Region <b>{html.escape(region)}</b>; {len(history)} events ({html.escape(summary)});
current level <b>{level}</b>. Generated {generated_at.isoformat()}. No prompt or completion text
is stored or shown: content appears as hashes and lengths.</p>
{start}
<h2>Timeline</h2>
<p>Dots: classifier scores per category (0&ndash;1). Crosses: strikes. Black line: enforcement
level (L0&ndash;L5, right axis).</p>
{timeline_svg(history, base.level if base else 0)}
<h2>Decisions</h2>
<table><tr><th>version</th><th>time</th><th>what</th><th>rule / operator</th><th>reason</th>
<th>policy</th><th>causal chain</th></tr>
{_decision_rows(history, base)}
</table></body></html>
"""
