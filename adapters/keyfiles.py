"""Key files a region's processes share: ``$SAFEGUARDS_STATE_DIR`` (default ``./var/keys``).

In production keys come from the environment (each loader names its variable); the embedded
default keeps them in files made on first use with owner-only permissions, created exclusively
so that when several processes of a region start together, one makes the file and all read it.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def state_dir(directory: Path | None = None) -> Path:
    return directory or Path(os.environ.get("SAFEGUARDS_STATE_DIR", "var/keys"))


def read_or_make(path: Path, make: str, what: str) -> str:
    """The text of ``path``; where it does not exist, ``make`` is written there first (mode
    0600). The file appears whole or not at all: ``make`` is written to a private temporary
    file that is then hard-linked to ``path`` (atomic, and refused where the name exists), so
    a process starting beside this one reads the same key, never an empty file being written;
    a file another process made a moment earlier is kept and read."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp made it 0600
                f.write(make)
                f.flush()
                os.fsync(f.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass
        else:
            log.info("made %s in %s", what, path)
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def shared_secrets(region: str, name: str, *, id_prefix: str, what: str,
                   directory: Path | None = None) -> list[tuple[str, bytes]]:
    """A region's shared secrets by key id, the first one signing: ``SAFEGUARDS_<NAME>_KEYS_
    <REGION>`` (``kid:hex,...``) where set, else ``<state>/<name>-<region>.keys`` (``kid hex``
    per line), made on first use with one key."""
    raw = os.environ.get(f"SAFEGUARDS_{name.upper()}_KEYS_{region.upper()}")
    if raw:
        pairs = [part.strip().split(":", 1) for part in raw.split(",") if part.strip()]
    else:
        path = state_dir(directory) / f"{name}-{region}.keys"
        made = f"{id_prefix}-{secrets.token_hex(4)} {secrets.token_hex(32)}\n"
        pairs = [line.split() for line in read_or_make(path, made, what).splitlines()
                 if line.strip()]
    return [(kid, bytes.fromhex(secret)) for kid, secret in pairs]


def bound_message(domain: bytes, subject: str, data: bytes) -> bytes:
    """What every signature and MAC on the bus covers: a domain tag (so one kind of proof is
    never accepted as another), the subject (so a message cannot be replayed on another) and
    the payload."""
    return b"\x1f".join((domain, subject.encode("ascii"), data))
