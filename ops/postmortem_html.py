"""``ops timeline``'s report: one self-contained HTML file, its plots inline SVG drawn here.

No script, no stylesheet or font from elsewhere, nothing fetched: it opens offline and can be
attached to an incident. Every name from the records (accounts, rules, operators, reasons of
dead letters) is escaped; no prompt or completion text is ever read, so none can appear.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta

from safeguards.ops.postmortem import BUCKETS, LISTED, MAX_ROWS, FallbackWindow, Postmortem

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf")
W, H, PAD = 960, 220, 48
TOP_RULES = 8


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def plot_svg(pm: Postmortem, series: Sequence[tuple[str, Sequence[float | None]]],
             unit: str, shade: Sequence[FallbackWindow] = ()) -> str:
    """Lines over the window's buckets, one per series; ``shade``: fallback windows drawn
    behind them (fail-open red, fail-closed grey)."""
    top = max([v for _, values in series for v in values if v is not None] or [0.0]) or 1.0
    inner_w, inner_h = W - 2 * PAD, H - 2 * PAD
    span = (pm.until - pm.since).total_seconds()

    def x_of(at: datetime) -> float:
        return PAD + inner_w * min(max((at - pm.since).total_seconds() / span, 0.0), 1.0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11" role="img">',
             f'<rect x="{PAD}" y="{PAD}" width="{inner_w}" height="{inner_h}" fill="#fafafa" '
             'stroke="#ccc"/>']
    for w in shade:
        x0, x1 = x_of(w.start), x_of(w.end)
        colour = "#d62728" if w.mode == "open" else "#7f7f7f"
        parts.append(f'<rect x="{x0:.1f}" y="{PAD}" width="{max(x1 - x0, 2.0):.1f}" '
                     f'height="{inner_h}" fill="{colour}" fill-opacity="0.15"><title>fail-'
                     f'{w.mode} {_iso(w.start)} .. {_iso(w.end)}</title></rect>')
    for frac in (0.0, 0.5, 1.0):
        y = H - PAD - inner_h * frac
        parts.append(f'<text x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#444">'
                     f'{top * frac:.4g}</text>')
    step = inner_w / BUCKETS
    for i, (name, values) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{PAD + step * (b + 0.5):.1f},{H - PAD - inner_h * v / top:.1f}"
                          for b, v in enumerate(values) if v is not None)
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5"><title>{_e(name)}</title></polyline>')
        parts.append(f'<rect x="{PAD + i * 150}" y="14" width="10" height="10" '
                     f'fill="{colour}"/><text x="{PAD + i * 150 + 14}" y="23">'
                     f'{_e(name[:22])}</text>')
    parts.append(f'<text x="{W - PAD}" y="23" text-anchor="end" fill="#444">{_e(unit)} per '
                 f'{timedelta(seconds=round(pm.bucket_s))}</text>')
    parts.append(f'<text x="{PAD}" y="{H - 14}">{_iso(pm.since)}</text>')
    parts.append(f'<text x="{W - PAD}" y="{H - 14}" text-anchor="end">{_iso(pm.until)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                     for row in rows)
    return f"<table><tr>{head}</tr>\n{body}\n</table>"


def _fallback_section(pm: Postmortem) -> str:
    rows = [(f"fail-{w.mode}", _iso(w.start), _iso(w.end), str(w.end - w.start), w.requests,
             len(w.accounts), ", ".join(f"{c} {n}" for c, n in sorted(w.causes.items())))
            for w in pm.windows]
    note = (f"<p><b>Only the first {MAX_ROWS} fallback requests were read</b>: narrow the "
            "window.</p>"
            if pm.fallbacks_truncated else "")
    return (f"<p>{sum(pm.fail_open)} requests served on a fail-open fallback, "
            f"{sum(pm.fail_closed)} refused on a fail-closed one, of {sum(pm.requests)} "
            "requests. A window: requests on one mode's fallback with no gap over 5 minutes, "
            "from the first to the last.</p>" + note
            + _table(("mode", "start", "end", "length", "requests", "accounts", "causes"), rows)
            + plot_svg(pm, [("requests", pm.requests), ("fail-open", pm.fail_open),
                            ("fail-closed", pm.fail_closed)], "requests", pm.windows))


def _rules_section(pm: Postmortem) -> str:
    ranked = sorted(pm.rules.items(), key=lambda kv: (-kv[1].changes, kv[0]))
    rows = [(rule, m.changes, len(m.accounts),
             ", ".join(f"L{lv}: {len(a)}" for lv, a in sorted(m.to_level.items())))
            for rule, m in ranked]
    series = [(rule, [float(n) for n in m.per_bucket]) for rule, m in ranked[:TOP_RULES]]
    note = (f"<p><b>Only the first {MAX_ROWS} enforcement changes and operator actions were "
            "read</b>: narrow the window.</p>" if pm.decisions_truncated else "")
    return note + (_table(("rule", "changes", "accounts", "accounts moved to each level"), rows)
            + (plot_svg(pm, series, "changes", pm.windows) if series else ""))


def _lag_section(pm: Postmortem) -> str:
    worst = pm.lag_worst_s
    return (f"<p>{pm.commands} enforcement commands committed in the window, {pm.unsent} not "
            f"sent by its end; the longest wait from commit to send: "
            f"{'none' if worst is None else f'{worst:.1f} s'}.</p>"
            + plot_svg(pm, [("worst lag (s)", pm.lag_max_s)], "seconds", pm.windows))


def _dead_letter_section(pm: Postmortem) -> str:
    if pm.dead_letter_problem:
        return f"<p><b>Dead letters {_e(pm.dead_letter_problem)}</b></p>"
    counts = [(src, reason, n) for (src, reason), n in sorted(pm.dead_letter_counts.items())]
    listed = [(_iso(d.at), d.source, d.reason, d.error) for d in pm.dead_letters]
    return (f"<p>{sum(pm.dead_per_bucket)} messages dead-lettered in the window (reasons and "
            f"sources only; payloads are never read); the first {LISTED} listed.</p>"
            + _table(("source", "reason", "messages"), counts)
            + plot_svg(pm, [("dead letters", [float(n) for n in pm.dead_per_bucket])],
                       "messages", pm.windows)
            + "<details><summary>each</summary>"
            + _table(("time", "source", "reason", "error"), listed) + "</details>")


def _operator_section(pm: Postmortem) -> str:
    who = ", ".join(f"{o} {n}" for o, n in sorted(pm.operator_counts.items())) or "none"
    rows = [(_iso(r.at), r.account, r.operator, r.kind, r.what) for r in pm.operators]
    return (f"<p>By operator: {_e(who)}. The first {LISTED} are listed; their reasons are "
            "personal data and stay in each account's history (<code>safeguards ops history "
            "ACCOUNT</code>).</p>"
            + _table(("time", "account", "operator", "event", "what"), rows))


def postmortem_html(pm: Postmortem, operator: str, generated_at: datetime) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Postmortem {_e(pm.region)} {_e(_iso(pm.since))} .. {_e(_iso(pm.until))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; margin: 0.5em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }}
</style></head><body>
<h1>Postmortem: region {_e(pm.region)}</h1>
<p id="scope">Region <b>{_e(pm.region)}</b>; window <b>{_e(_iso(pm.since))}</b> to
<b>{_e(_iso(pm.until))}</b>. Generated <b>{_e(_iso(generated_at))}</b> by operator
<b>{_e(operator)}</b>. From the region's durable records (its event store, outbox and
dead-letter stream); no prompt or completion text is read or shown.</p>
<h2>Fail-open and fail-closed windows</h2>
{_fallback_section(pm)}
<h2>Enforcement lag</h2>
{_lag_section(pm)}
<h2>Dead letters</h2>
{_dead_letter_section(pm)}
<h2>Enforcement changes by rule</h2>
{_rules_section(pm)}
<h2>Operator actions</h2>
{_operator_section(pm)}
</body></html>
"""
