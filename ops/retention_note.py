"""What operators are told where retention truncated an account's history.

Once retention removed an account's oldest events, a page or listing that stops at its first kept
event is not the start of the history: ``ops history`` and the console's timeline say which
versions retention removed and when, and what its retention base (the state at the last removed
version) held, instead of offering older events that are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeguards.adapters.store.retention_base import Base, retention_bases


@dataclass(frozen=True, slots=True)
class RetentionNote:
    through: int  # the last version retention removed: the base is the state there
    removed_at: datetime | None  # when retention last truncated the history
    level: int | None  # the base's level; None: this build cannot read the base
    risk: tuple[tuple[str, float], ...]  # the base's risk per category, as of its last change

    @property
    def first_kept(self) -> int:
        return self.through + 1

    def summary(self) -> str:
        """The base's level and risk."""
        if self.level is None:
            return "its retention base cannot be read by this build (see ops retention)"
        risk = ", ".join(f"{category} {total:.3f}" for category, total in self.risk)
        return f"retention base at v{self.through}: L{self.level}, risk {risk or 'none'}"

    def line(self) -> str:
        on = f" on {self.removed_at.date().isoformat()}" if self.removed_at else ""
        return (f"history before v{self.first_kept} was removed by retention{on} "
                f"(v1..v{self.through}); {self.summary()}")

    def as_json(self) -> dict[str, Any]:
        return {"removed_versions": [1, self.through], "first_kept_version": self.first_kept,
                "removed_at": self.removed_at.isoformat() if self.removed_at else None,
                "base_version": self.through, "base_level": self.level,
                "base_risk": {category: total for category, total in self.risk}}


def note_of(base: Base) -> RetentionNote:
    state = base.state
    if state is None:
        return RetentionNote(base.version, base.removed_at, None, ())
    return RetentionNote(base.version, base.removed_at, state.level,
                         tuple((r.category, r.total) for r in state.risk))


async def retention_note(store: Any, account_id: str) -> RetentionNote | None:
    """``account_id``'s retention note (None: retention never truncated its history)."""
    base = (await retention_bases(store, [account_id])).get(account_id)
    return None if base is None else note_of(base)
