"""Key files made on first use appear whole: processes starting together read one key."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from safeguards.adapters.keyfiles import read_or_make


def _read(path: str, made: str) -> str:
    return read_or_make(Path(path), made, "a test key")


def test_processes_starting_together_read_the_same_whole_key(tmp_path: Path) -> None:
    # Worker processes of one proxy start at once and each reads or makes the region's key: none
    # may read a file another is still writing (an empty key), and all must read the same one.
    # One pool for every attempt: its 8 processes are up, so each attempt's 8 calls race at once
    # (forking the test process, large late in a run, 40 times took ~8 s of CI).
    with multiprocessing.get_context("fork").Pool(8) as pool:
        for attempt in range(5):
            path = tmp_path / f"key-{attempt}" / "enforce-us.key"
            candidates = [f"{n:02d}" * 32 for n in range(8)]
            read = pool.starmap(_read, [(str(path), made) for made in candidates], chunksize=1)
            assert len(set(read)) == 1 and read[0] in candidates
            assert path.stat().st_mode & 0o777 == 0o600
            # no temporaries left
            assert [p.name for p in path.parent.iterdir()] == ["enforce-us.key"]
