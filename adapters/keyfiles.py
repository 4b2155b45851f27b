"""Key files a region's processes share: ``$SAFEGUARDS_STATE_DIR`` (default ``./var/keys``).

In production keys come from the environment (each loader names its variable); the embedded
default keeps them in files made on first use with owner-only permissions, created exclusively
so that when several processes of a region start together, one makes the file and all read it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def state_dir(directory: Path | None = None) -> Path:
    return directory or Path(os.environ.get("SAFEGUARDS_STATE_DIR", "var/keys"))


def read_or_make(path: Path, make: str, what: str) -> str:
    """The text of ``path``; where it does not exist, ``make`` is written there first (mode
    0600, exclusive create: a file another process made a moment earlier is kept and read)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(make)
            log.info("made %s in %s", what, path)
    return path.read_text().strip()
