"""The fleet-wide schema-version gate: no node runs partitions whose histories it cannot read.

During a rolling deploy a newer node may write events of a schema version older nodes do not
know (``core.upcasters`` lifts old versions, never new ones). Every node therefore announces
which version of each event type it reads (``schema.<node>`` in the region's lease bucket,
renewed with its heartbeat, gone with it), and partitions are spread only over the nodes that
read everything the live fleet may write: an older node hands its partitions over and takes
none (one ALARM line) while a newer one is live, and takes part again once none is. A node that
announces nothing (older software) is not held back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from safeguards.core.events import EVENT_TYPES

SchemaTable = Mapping[str, int]


def own_schemas() -> dict[str, int]:
    """The newest schema version of each event type this node's codec reads."""
    return {name: cls.SCHEMA_VERSION for name, cls in sorted(EVENT_TYPES.items())}


def encode_table(table: SchemaTable) -> str:
    return json.dumps(dict(sorted(table.items())), separators=(",", ":"))


def decode_table(text: str) -> dict[str, int] | None:
    """A node's announced table; None for anything that is not one (ignored, never trusted)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()):
        return None
    return value


def reads_all(table: SchemaTable, fleet: Sequence[SchemaTable]) -> bool:
    """Whether a node reading ``table`` reads every version any of ``fleet`` writes."""
    return all(table.get(name, 0) >= version
               for other in fleet for name, version in other.items())


def eligible(nodes: Sequence[str], announced: Mapping[str, str]) -> list[str]:
    """The live ``nodes`` that may run partitions, given each one's announced table
    (``announced``: node id -> encoded table; a node without one is eligible)."""
    tables = {node: decode_table(text) for node, text in announced.items()}
    fleet = [t for node, t in tables.items() if t is not None and node in nodes]
    return [n for n in nodes if (t := tables.get(n)) is None or reads_all(t, fleet)]
