"""Driver errors translated at the store's boundary into the project's own hierarchy.

Connection loss, refused connections, timeouts and server shutdowns become
:class:`StoreUnavailable` (retryable: nothing was committed, or the outcome is settled by the
inbox key on retry). Anything else the server rejects becomes :class:`StoreFailure`, which a retry
will not fix (a missing schema, a bug in a query).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy import exc as sa_exc

from safeguards.core.errors import SafeguardsError, StoreUnavailable


class StoreFailure(SafeguardsError):
    """The store rejected an operation for a reason retrying cannot fix."""


class SchemaMissing(StoreFailure):
    """The database has not been migrated: run ``migrate(database_url)`` (``safeguards run``)."""


class CredentialRefused(StoreFailure):
    """The server refused this credential the database: a wrong password, an unknown role, or a
    region's role (``region_roles``) pointed at a database that is not its region's."""


class MigrationNotPermitted(StoreFailure):
    """The schema is behind, and this credential (a region's role) may not change it: migrate
    with the administrative credential (``region_roles.provision_region``)."""


_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")  # connection, resources, shutdown, system
_RETRYABLE_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def driver_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE behind a driver exception (as SQLAlchemy wraps it), or None."""
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig if exc.orig is not None else exc
        orig = getattr(orig, "__cause__", None) or orig
    return _sqlstate(orig)


def classify(exc: BaseException) -> SafeguardsError | None:
    """The project error for a driver exception, or None when it is not a driver exception."""
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return StoreUnavailable(f"connection to the event store lost ({type(exc).__name__})")
        orig = exc.orig if exc.orig is not None else exc
        # SQLAlchemy's asyncpg adapter wraps the driver's exception one level further down.
        orig = getattr(orig, "__cause__", None) or orig
    elif not isinstance(exc, sa_exc.SQLAlchemyError | asyncpg.PostgresError
                        | asyncpg.InterfaceError | asyncpg.InternalClientError | OSError
                        | TimeoutError):
        return None
    name = type(orig).__name__
    state = _sqlstate(orig)
    if state == "42P01":
        return SchemaMissing("the event store's tables are missing: migrate the database first")
    if state is not None and (state[:2] == "28" or (
            state == "42501" and str(orig).startswith("permission denied for database"))):
        # the server's own words name the role or the database, never a password
        said = str(getattr(orig, "message", None) or orig).splitlines()[0]
        return CredentialRefused(f"the database refused this credential ({name}, sqlstate "
                                 f"{state}: {said}); a region's role reaches only its own "
                                 "region's database: check the database URL")
    if (isinstance(orig, OSError | TimeoutError | asyncpg.InterfaceError
                   | asyncpg.InternalClientError  # a connection left mid-operation (cancelled)
                   | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError)
            or isinstance(exc, sa_exc.TimeoutError | sa_exc.InterfaceError)
            or (state is not None and (state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
                                       or state in _RETRYABLE_SQLSTATES))):
        return StoreUnavailable(f"event store unavailable ({name})")
    return StoreFailure(f"event store rejected the operation ({name}, sqlstate {state})")


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except SafeguardsError:
        raise
    except Exception as exc:
        mapped = classify(exc)
        if mapped is None:
            raise
        raise mapped from exc
