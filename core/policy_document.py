"""Reading a policy document: typed values out of parsed TOML, every problem remembered with its
path instead of stopping at the first, so an operator sees all of them at once."""

from __future__ import annotations

from typing import Any


class DocumentChecker:
    """Reads typed values out of parsed TOML, remembering every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str,
            default: Any = ..., ) -> Any:
        if key not in table:
            if default is ...:
                self.problems.append(f"{_join(path, key)}: missing")
            return None if default is ... else default
        value = table[key]
        if isinstance(value, bool) and kind is not bool and not (
            isinstance(kind, tuple) and bool in kind
        ):
            self.problems.append(f"{_join(path, key)}: expected a number, got a boolean")
            return None
        if not isinstance(value, kind):
            self.problems.append(
                f"{_join(path, key)}: expected {_kind_name(kind)}, got {type(value).__name__}"
            )
            return None
        return value

    def number(self, table: dict[str, Any], key: str, path: str, *, lo: float, hi: float,
               default: Any = ...) -> float:
        value = self.get(table, key, (int, float), path, default)
        if value is None:
            return 0.0
        if not lo <= value <= hi:
            self.problems.append(f"{path}.{key}: {value} is outside [{lo}, {hi}]")
        return float(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
