"""``safeguards ops dlq replay``: re-publish parked signals once their cause is fixed.

    safeguards ops dlq replay --region eu --operator alice [--reason quarantined]
                              [--account ACCOUNT] [--dry-run] [--limit 10000]
                              [--nats URL] [--database-url URL]

Reads the region's dead-letter stream (oldest first, at most ``--limit`` entries), takes those
dead-lettered by the nodes' partitions under ``--reason`` (``quarantined``: an account whose
history could not be read; also ``rejected``, ``decide_failed``, ``store_refused``), and
re-publishes each one's original bytes on its original input subject with the proofs it was
sent with (``bus.dlq`` keeps them), so the nodes check it as they checked the original. Its
signal id is unchanged, so applying it twice is impossible: a signal the store's inbox already
holds is not sent again (``already_applied``), a second replay within JetStream's duplicate
window is dropped there (``duplicate``), and a later one the inbox absorbs.

Never replayed: poison (``undecodable``, ``region_mismatch``, ``subject_mismatch``) and signals
whose proof was refused (``operator_unverified``, ``producer_unverified``) are refused as a
reason; an entry that does not decode as a signal of the region on one of its own input subjects
is refused one by one (``refused: ...``). Dead letters stay in the stream (they are the record).

An admin of the region with a registered operator key runs it; the replay (and a dry run) is
signed and recorded in the region's audit of operator commands (``ops reads``) before the stream
is read. Prints one JSON line per entry (``dlq_seq``, ``account``, ``signal_id``, ``result``)
and a summary; exits 1 if a publish failed, else 0. Fix the cause first: a node reads a
quarantined account's history again ``quarantine_recheck_s`` (60 s) after its quarantine began,
and a replayed signal that still meets an unreadable history is parked again.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from safeguards.core.bus import DeadLetterReason
from safeguards.core.errors import CodecError, InvalidInput, SafeguardsError
from safeguards.core.ids import subject_token, validate_account_id, validate_region
from safeguards.ops.cli import DB_HELP, _fail, _run, audited_store

REPLAYABLE = (DeadLetterReason.QUARANTINED, DeadLetterReason.REJECTED,
              DeadLetterReason.DECIDE_FAILED, DeadLetterReason.STORE_REFUSED)
NODE_SOURCE = "acct-p"  # the dead letters of the nodes' partitions (``MailSettlement.source``)


def register_ops(ops_sub: Any) -> None:
    dlq = ops_sub.add_parser("dlq", help="the region's dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    replay = dlq_sub.add_parser("replay", help="re-publish parked signals (after a fix)")
    replay.add_argument("--region", required=True)
    replay.add_argument("--operator", required=True,
                        help="the admin replaying (a registered operator key of the region)")
    replay.add_argument("--reason", default=str(DeadLetterReason.QUARANTINED),
                        help="which dead letters: " + ", ".join(REPLAYABLE))
    replay.add_argument("--account", default=None, help="only this account's signals")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.add_argument("--limit", type=int, default=10_000,
                        help="dead letters read at most (oldest first)")
    replay.add_argument("--nats", default=None, help="NATS URL (default $SAFEGUARDS_NATS_URL)")
    replay.add_argument("--database-url", default=None, help=DB_HELP)
    replay.set_defaults(handler=_replay, ops_command="dlq-replay")


def check_admin(region: str, operator: str, what: str) -> None:
    """``what`` is an admin's, signed with their registered key: refused otherwise."""
    from safeguards.adapters.operators import OperatorRegistry, OperatorSigner

    role = OperatorRegistry(region).role(operator)
    if role is None:
        raise InvalidInput(f"{operator} is not a registered operator of {region}")
    if role != "admin":
        raise InvalidInput(f"{what} takes an admin; {operator} is {role}")
    OperatorSigner(operator)  # raises where this machine holds no key for them


def nats_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("SAFEGUARDS_NATS_URL")
    if not url:
        raise InvalidInput("no NATS: pass --nats or set SAFEGUARDS_NATS_URL")
    return url


def _refusal(region: str, account: str | None, headers: dict[str, str],
             data: bytes) -> tuple[str, Any]:
    """(why it is refused, or "" and the signal it carries)."""
    from safeguards.adapters.bus.dlq import H_SUBJECT
    from safeguards.core.codec import decode_signal
    from safeguards.core.subjects import is_inputs_subject

    try:
        signal = decode_signal(data)
    except CodecError:
        return "refused: undecodable", None
    if signal.region != region:
        return "refused: another region's signal", signal
    subject = headers.get(H_SUBJECT, "")
    if not (is_inputs_subject(subject) and subject.startswith(f"sg.{region}.acct.")
            and subject.endswith("." + subject_token(signal.account_id))):
        return "refused: not the account's input subject", signal
    if account is not None and signal.account_id != account:
        return "other account", signal
    return "", signal


async def replay(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
                 ) -> dict[str, int]:
    """Replays (or, dry, lists) the matching dead letters; ``emit`` gets each one's result.
    Returns the count of each result."""
    from nats.js.errors import APIError, NotFoundError

    from safeguards.adapters.bus.dlq import H_REASON, KEPT_PROOFS
    from safeguards.core.subjects import stream_name
    from safeguards.ops.actions import operator_connection

    region = validate_region(args.region)
    account = None if args.account is None else validate_account_id(args.account)
    if args.reason not in REPLAYABLE:
        raise InvalidInput(f"dead letters under {args.reason!r} are never replayed (replayable: "
                           + ", ".join(REPLAYABLE) + ")")
    if not 1 <= args.limit <= 1_000_000:
        raise InvalidInput("--limit must be between 1 and 1000000")
    url = nats_url(args.nats)
    check_admin(region, args.operator, "a replay")
    scope = f"reason={args.reason}" + ("" if account is None else f" account={account}")
    store = await audited_store(args, scope)  # signed and recorded before the stream is read
    counts: dict[str, int] = {}
    try:
        nc = await operator_connection(url, region)
        try:
            js = nc.jetstream()
            dlq, inputs = stream_name(region, "DLQ"), stream_name(region, "INPUTS")
            state = (await js.stream_info(dlq)).state
            first = int(state.first_seq)
            for seq in range(first, min(int(state.last_seq), first + args.limit - 1) + 1):
                try:
                    msg = await js.get_msg(dlq, seq)
                except NotFoundError:
                    continue  # removed (aged out, purged)
                headers = msg.headers or {}
                if (headers.get(H_REASON) != args.reason
                        or not (msg.subject or "").startswith(f"sg.{region}.dlq.{NODE_SOURCE}")):
                    continue
                why, signal = _refusal(region, account, headers, msg.data or b"")
                if why == "other account":
                    continue
                result = why or await _send(js, store, inputs, signal, headers, msg.data or b"",
                                            KEPT_PROOFS, args.dry_run, APIError)
                counts[result] = counts.get(result, 0) + 1
                emit({"dlq_seq": seq, "account": None if signal is None else signal.account_id,
                      "signal_id": None if signal is None else signal.signal_id,
                      "result": result})
        finally:
            await nc.close()
    finally:
        await store.close()
    return counts


async def _send(js: Any, store: Any, stream: str, signal: Any, headers: dict[str, str],
                data: bytes, kept: tuple[str, ...], dry_run: bool,
                api_error: type[Exception]) -> str:
    import anyio
    import nats.errors

    from safeguards.adapters.bus.dlq import H_SUBJECT, header_safe

    if await store.inbox_contains(signal.signal_id):
        return "already_applied"
    if dry_run:
        return "would_replay"
    out = {name: headers[name] for name in kept if name in headers}
    out["Nats-Msg-Id"] = header_safe(f"replay:{signal.signal_id}")
    try:
        with anyio.fail_after(10):
            ack = await js.publish(headers[H_SUBJECT], data, headers=out, stream=stream,
                                   timeout=5)
    except (TimeoutError, nats.errors.Error, api_error) as exc:
        return f"failed: {type(exc).__name__}"
    return "duplicate" if ack.duplicate else "replayed"


def print_json_line(line: dict[str, Any]) -> None:
    """One result line of an ops command that reports as it goes (JSON lines)."""
    print(json.dumps(line), flush=True)


def _replay(args: argparse.Namespace) -> int:
    try:
        counts = _run(lambda a: replay(a, print_json_line), args)
    except SafeguardsError as exc:
        return _fail(exc)
    print(json.dumps({"summary": counts, "dry_run": args.dry_run}))
    return 1 if any(k.startswith("failed") for k in counts) else 0
