"""``safeguards ops``: the operator's read path over a region's event store.

    safeguards ops history ACCOUNT --region eu [--from-version N] [--to-version N]
                                               [--since TIME] [--until TIME] [--json]
    safeguards ops state-at ACCOUNT --region eu --at TIME|VERSION [--json]

Where retention truncated the account's history, ``ops history`` first says so: which versions
it removed and when, and its retention base's level and risk (``--json``: an object whose
``retention`` holds that, null where nothing was removed, beside ``events``).

Which database: ``--database-url``, else ``SAFEGUARDS_DATABASE_URL_<REGION>`` (for example
``SAFEGUARDS_DATABASE_URL_EU``), else ``SAFEGUARDS_DATABASE_URL``. Times are ISO 8601 with a zone
(``2026-11-27T10:00:00Z``). Nothing here writes: reads come from the region's own store, so an
account's history never leaves its region's database except onto the operator's terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from safeguards.core.errors import InvalidInput, SafeguardsError
from safeguards.core.events import (
    AccountErased,
    AccountLinked,
    AggregateEnforced,
    AppealFiled,
    AppealResolved,
    ApprovalGranted,
    ApprovalRequested,
    EnforcementChanged,
    Event,
    LinkedEpisode,
    MemberLinked,
    OperatorActionTaken,
    RequestObserved,
    ReviewClaimed,
    ReviewRequested,
    ScoreRecorded,
    ShadowDecision,
    StrikeRecorded,
)
from safeguards.core.ids import validate_account_id, validate_region
from safeguards.core.state import AccountState

if TYPE_CHECKING:
    from safeguards.ops.retention_note import RetentionNote

DB_HELP = ("PostgreSQL URL of the region's store; default: $SAFEGUARDS_DATABASE_URL_<REGION>, "
           "then $SAFEGUARDS_DATABASE_URL")
MAX_CELL = 48

# Other ops modules may add subcommands under ``ops`` through ``register_ops(ops_subparsers)``;
# list them here (one ``ops`` parser, so two modules never claim the same top-level name).
OPS_MODULES: tuple[str, ...] = ("safeguards.ops.analysis_cli", "safeguards.ops.actions_cli",
                                "safeguards.ops.queue_cli", "safeguards.ops.policy_cli",
                                "safeguards.ops.operators_cli", "safeguards.ops.verify_cli",
                                "safeguards.ops.nats_cli", "safeguards.ops.erase_cli",
                                "safeguards.ops.homes_cli", "safeguards.ops.timeline_cli",
                                "safeguards.ops.provision_cli", "safeguards.ops.dlq_cli",
                                "safeguards.ops.gates_cli")


class UsageError(InvalidInput):
    """A command line that names no database, or a time or version that does not parse."""


def register(sub: Any) -> None:
    ops = sub.add_parser("ops", help="operator tools: an account's history and past states",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ops_sub = ops.add_subparsers(dest="ops_command", required=True)

    history = ops_sub.add_parser("history", help="an account's timeline from its region's store")
    _common(history)
    history.add_argument("--from-version", type=int, default=1)
    history.add_argument("--to-version", type=int, default=None)
    history.add_argument("--since", type=_time, default=None, help="ISO time with a zone")
    history.add_argument("--until", type=_time, default=None, help="ISO time with a zone")
    history.set_defaults(handler=_history)

    state_at = ops_sub.add_parser("state-at", help="an account's state as of a time or version")
    _common(state_at)
    state_at.add_argument("--at", required=True, type=_time_or_version,
                          help="a version (integer) or an ISO time with a zone")
    state_at.set_defaults(handler=_state_at)

    import importlib

    for name in OPS_MODULES:
        importlib.import_module(name).register_ops(ops_sub)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="the account id")
    parser.add_argument("--region", required=True, help="the account's residency region")
    parser.add_argument("--database-url", default=None, help=DB_HELP)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time {text!r} has no zone: add Z or +00:00")
    return at


def _time_or_version(text: str) -> int | datetime:
    if text.isdigit():
        return int(text)
    return _time(text)


def database_url(region: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    for name in (f"SAFEGUARDS_DATABASE_URL_{region.upper()}", "SAFEGUARDS_DATABASE_URL"):
        value = os.environ.get(name)
        if value:
            return value
    raise UsageError(f"no database for region {region!r}: pass --database-url or set "
                     f"SAFEGUARDS_DATABASE_URL_{region.upper()}")


# --- rendering ----------------------------------------------------------------------------------


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.isoformat().replace("+00:00", "Z")


def timeline_row(event: Event) -> dict[str, Any]:
    """One line of the timeline: what happened, why, by which rule and policy, to which level."""
    b = event.body
    reason = rule = level = detail = ""
    if isinstance(b, RequestObserved):
        detail = f"{b.action} via {b.surface}, model {b.model}, {b.input_tokens}+" \
                 f"{b.output_tokens} tokens" + (f", organisation {b.organization_id}"
                                                if b.organization_id else "") + (
                     f", prompt link {b.prompt_link}" if b.prompt_link else "") + (
                     f", gate fallback {b.fallback}" if b.fallback else "")
    elif isinstance(b, ScoreRecorded):
        top = sorted(b.scores, key=lambda s: -s[1])[:3]
        notes = [b.content_kind, f"{b.model_name} {b.model_version}"]
        notes += ["shadow"] * b.shadow + [f"from account {b.member_account}"] * bool(
            b.member_account)
        detail = (", ".join(f"{c} {s:.2f}" for c, s in top) or "no scores") + \
            f" ({', '.join(notes)})"
    elif isinstance(b, AccountLinked):
        rule = b.rule_id
        detail = f"linked to {b.aggregate} ({b.link}, request {b.request_id})"
    elif isinstance(b, AggregateEnforced):
        detail = (f"linked {b.aggregate} stands at L{b.level} ({b.rule_id}, its "
                  f"v{b.aggregate_version})")
    elif isinstance(b, MemberLinked):
        detail = f"member {b.member_account} ({b.link}, request {b.request_id})"
    elif isinstance(b, LinkedEpisode):
        level = f"L{b.level}"
        told = (f"its newest {b.reach} member(s) told" if b.phase == "opened"
                else "its members no longer told")
        detail = (f"linked enforcement {b.phase} at L{b.level} (trigger L{b.trigger_level}), "
                  f"{told} (from v{b.caused_by_version})")
    elif isinstance(b, StrikeRecorded):
        rule = b.rule_id
        detail = (f"{b.category} +{b.points:.2f} -> {b.total_after:.2f} "
                  f"(from v{b.caused_by_version})")
    elif isinstance(b, EnforcementChanged):
        reason, rule = b.reason, b.rule_id
        level = f"L{b.previous_level}->L{b.level}"
        detail = f"risk {b.risk_total:.2f}" + (f", expires {_iso(b.expires_at)}"
                                               if b.expires_at else "")
    elif isinstance(b, OperatorActionTaken):
        reason = b.reason
        level = {"set_level": f"->L{b.level}", "clear": "cleared"}.get(b.action, "")
        detail = f"{b.action} by {b.operator}" + (f", expires {_iso(b.expires_at)}"
                                                  if b.expires_at else "")
    elif isinstance(b, ApprovalRequested):
        reason = b.reason
        level = f"(awaits approval: {'clear' if b.action == 'clear' else f'L{b.level}'})"
        detail = f"{b.action} asked by {b.operator}; a second operator must approve"
    elif isinstance(b, ApprovalGranted):
        reason = b.reason
        level = "cleared" if b.action == "clear" else f"->L{b.level}"
        detail = f"{b.action} asked by {b.operator}, approved by {b.approver}"
    elif isinstance(b, ReviewRequested):
        reason, rule = b.reason, b.rule_id
        level = f"(review L{b.proposed_level})"
        detail = f"awaits an operator (from v{b.caused_by_version})"
    elif isinstance(b, ReviewClaimed):
        reason = b.reason
        detail = f"review claimed by {b.operator}"
    elif isinstance(b, AppealFiled):
        reason = b.reason
        detail = f"appeal {b.appeal_id} by {b.filed_by}"
    elif isinstance(b, AppealResolved):
        reason = b.reason
        level = f"->L{b.level_after}"
        detail = f"appeal {b.appeal_id} {b.outcome} by {b.operator}"
    elif isinstance(b, ShadowDecision):
        reason, rule = b.reason, b.rule_id
        level = f"(shadow L{b.current_level}->L{b.would_level})"
    elif isinstance(b, AccountErased):
        detail = (f"erased by {b.operator}: personal fields of v1..v{b.erased_through} "
                  f"({b.keys_destroyed} data key destroyed)")
    return {"version": event.version, "time": _iso(event.occurred_at), "type": event.type,
            "reason": reason, "rule": rule, "policy_version": event.policy_version or "",
            "level": level, "detail": detail}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def event_json(event: Event) -> dict[str, Any]:
    return {**timeline_row(event), "event_id": event.event_id,
            "causation_id": event.causation_id, "correlation_id": event.correlation_id,
            "body": _jsonable(event.body)}


COLUMNS = ("version", "time", "type", "level", "reason", "rule", "policy_version", "detail")
HEADERS = {"version": "VER", "time": "TIME", "type": "TYPE", "level": "LEVEL",
           "reason": "REASON", "rule": "RULE", "policy_version": "POLICY", "detail": "DETAIL"}


def render_table(rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    def cell(value: Any) -> str:
        text = str(value)
        return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "~"

    cells = [[cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max([len(HEADERS[c]), *(len(row[i]) for row in cells)])
              for i, c in enumerate(COLUMNS)]
    print("  ".join(HEADERS[c].ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip(),
          file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def render_state(state: AccountState, at: datetime | None, out: TextIO) -> None:
    now = at or state.last_seen
    lines = [
        ("account", state.account_id), ("region", state.region), ("version", state.version),
        ("level", f"L{state.level}" + (f" until {_iso(state.level_expires_at)}"
                                       if state.level_expires_at else "")),
        ("level reason", state.level_reason), ("level rule", state.level_rule),
        ("level set at version", state.level_version),
        ("level policy version", state.level_policy_version or ""),
        ("strikes", state.strikes), ("requests", state.requests), ("scores", state.scores),
        ("last seen", _iso(state.last_seen)),
        ("open appeals", ", ".join(state.open_appeals)),
        ("open review", f"proposes L{state.review_level}" if state.review_level else ""),
    ]
    for risk in state.risk:
        decayed = f", {risk.at(now):.3f} at {_iso(now)}" if now is not None else ""
        lines.append((f"risk {risk.category}",
                      f"{risk.total:.3f} as of {_iso(risk.as_of)}{decayed}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}".rstrip(), file=out)


# --- handlers -----------------------------------------------------------------------------------


def open_store(args: argparse.Namespace, pool_size: int = 1) -> Any:
    """The store of ``args.region`` (the database from the flag or the environment)."""
    from safeguards.adapters.store import PostgresEventStore

    region = validate_region(args.region)
    return PostgresEventStore(region, database_url(region, args.database_url),
                              pool_size=pool_size)


def reader(args: argparse.Namespace) -> str:
    """Who is reading: ``--operator`` where the command has it, else $SAFEGUARDS_OPERATOR,
    else the OS user."""
    import getpass

    return (getattr(args, "operator", None) or os.environ.get("SAFEGUARDS_OPERATOR")
            or getpass.getuser())


async def audited_store(args: argparse.Namespace, subject: str, pool_size: int = 1) -> Any:
    """The region's store, once this read is recorded in its audit of operator reads (who,
    which command, which account or scope, signed with the reader's operator key where they
    hold one); a read that cannot be recorded does not happen."""
    from safeguards.adapters.operators import OperatorSigner

    store = open_store(args, pool_size)
    who = reader(args)
    try:
        signer = OperatorSigner(who)
    except InvalidInput:  # no operator key here: recorded as an unsigned read
        signature = None
    else:
        signature = signer.sign_read(args.region, args.ops_command, subject)
    try:
        await store.record_read(who, args.ops_command, subject, signature)
    except BaseException:
        await store.close()
        raise
    return store


async def _open(args: argparse.Namespace) -> Any:
    validate_account_id(args.account)
    return await audited_store(args, args.account)


async def _history_async(args: argparse.Namespace) -> tuple[list[Event], RetentionNote | None]:
    """The events asked for, and the account's retention note (None: never truncated)."""
    from safeguards.ops.retention_note import retention_note

    store = await _open(args)
    try:
        events: list[Event] = await store.history(
            args.account, from_version=args.from_version, to_version=args.to_version,
            since=args.since, until=args.until)
        return events, await retention_note(store, args.account)
    finally:
        await store.close()


async def _state_at_async(args: argparse.Namespace) -> AccountState:
    store = await _open(args)
    try:
        if isinstance(args.at, int):
            state: AccountState = await store.state_at(args.account, version=args.at)
        else:
            state = await store.state_at(args.account, at=args.at)
        return state
    finally:
        await store.close()


def _run(fn: Any, args: argparse.Namespace) -> Any:
    import anyio

    return anyio.run(fn, args)


def _fail(exc: SafeguardsError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, InvalidInput) else 1


def _history(args: argparse.Namespace) -> int:
    try:
        events, retention = _run(_history_async, args)
    except SafeguardsError as exc:
        return _fail(exc)
    if args.json:
        json.dump({"account": args.account, "region": args.region,
                   "retention": retention.as_json() if retention else None,
                   "events": [event_json(e) for e in events]}, sys.stdout, indent=1)
        print()
        return 0
    if retention is not None:  # the rows below are not the start of the history
        print(retention.line())
    if not events:
        print(f"no events for account {args.account!r} in region {args.region!r} "
              "within the given range")
        return 0
    print(f"account {args.account} (region {args.region}): {len(events)} events, "
          f"versions {events[0].version}..{events[-1].version}")
    render_table([timeline_row(e) for e in events], sys.stdout)
    return 0


def _state_at(args: argparse.Namespace) -> int:
    try:
        state = _run(_state_at_async, args)
    except SafeguardsError as exc:
        return _fail(exc)
    at = args.at if isinstance(args.at, datetime) else None
    if args.json:
        json.dump(_jsonable(state), sys.stdout, indent=1)
        print()
        return 0
    print(f"state of {args.account} as of "
          f"{'version ' + str(args.at) if at is None else _iso(at)}:")
    render_state(state, at, sys.stdout)
    return 0
