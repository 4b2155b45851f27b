"""The gate's last synced enforcement state, kept on local disk so that a restart during a NATS
outage keeps enforcing instead of serving every account at L0.

What is kept is what the stream delivered: each account's newest command as signed by the
region's relay (subject, key id, signature, payload), so loading it re-checks every signature
and every command exactly as the feed does; a damaged or foreign file loads nothing (counted,
logged) and the gate waits for the stream as it would without one. Files are written whole
(temporary file, then rename) and hold no prompt text: commands carry levels, limits and ids.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgpack

from safeguards.adapters.bus.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    CommandVerifier,
    command_problem,
)
from safeguards.core.codec import decode_command
from safeguards.core.enforcement import EnforcementCommand
from safeguards.core.errors import CodecError

log = logging.getLogger(__name__)

FORMAT = "sg-enforce-snapshot-1"
MAX_BYTES = 512 * 1024 * 1024

Signed = tuple[str, str, str, bytes]  # subject, key id, signature, payload


class FeedSnapshot:
    def __init__(self, path: Path, region: str, verifier: CommandVerifier) -> None:
        self.path = path
        self.region = region
        self.verifier = verifier
        self._newest: dict[str, Signed] = {}
        self.dirty = False
        self.saved = 0
        self.load_failures = 0

    def remember(self, subject: str, headers: dict[str, str], payload: bytes) -> None:
        """A command the feed verified and applied: the newest of its subject."""
        self._newest[subject] = (subject, headers[KEY_ID_HEADER], headers[SIGNATURE_HEADER],
                                 payload)
        self.dirty = True

    def forget(self, subject: str) -> None:
        if self._newest.pop(subject, None) is not None:
            self.dirty = True

    def save(self) -> int:
        """Write what was remembered; returns how many commands the file holds."""
        rows = list(self._newest.values())
        self.dirty = False
        data = msgpack.packb({"format": FORMAT, "region": self.region, "commands": rows},
                             use_bin_type=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.saved += 1
        return len(rows)

    def load(self) -> list[EnforcementCommand] | None:
        """The commands of a sound file (each one re-verified), None when there is no usable
        file. A command that fails its checks is left out and counted; it cannot poison the
        rest."""
        try:
            if self.path.stat().st_size > MAX_BYTES:
                raise ValueError("larger than any snapshot we write")
            doc = msgpack.unpackb(self.path.read_bytes(), raw=False)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get(
                    "region") != self.region or not isinstance(doc.get("commands"), list):
                raise ValueError("not this region's enforcement snapshot")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            self.load_failures += 1
            log.error("enforcement snapshot %s not used: %s", self.path, type(exc).__name__)
            return None
        commands: list[EnforcementCommand] = []
        for row in doc["commands"]:
            command = self._checked(row)
            if command is None:
                self.load_failures += 1
            else:
                commands.append(command)
        if self.load_failures:
            log.error("enforcement snapshot %s: %d entries refused", self.path,
                      self.load_failures)
        return commands

    def _checked(self, row: object) -> EnforcementCommand | None:
        if not (isinstance(row, list) and len(row) == 4 and all(
                isinstance(v, str) for v in row[:3]) and isinstance(row[3], bytes)):
            return None
        subject, kid, signature, payload = row
        headers = {KEY_ID_HEADER: kid, SIGNATURE_HEADER: signature}
        if self.verifier.problem(subject, payload, headers) is not None:
            return None
        try:
            command = decode_command(payload)
        except CodecError:
            return None
        if command_problem(command, subject, self.region) is not None:
            return None
        self._newest[subject] = (subject, kid, signature, payload)
        return command
