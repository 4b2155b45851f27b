"""Per-region PostgreSQL credentials: a region's processes log in as that region's own role.

Each region ``R`` has a login role ``sg_R`` with its own password (``$SAFEGUARDS_DATABASE_PASSWORD_
<R>``, else ``<state>/postgres-R.password``, made on first use, mode 0600, like the region's other
keys). :func:`provision_region` is the only thing that uses the administrative (bootstrap)
credential: it creates the role and the region's database, takes ``CONNECT`` on that database away
from ``PUBLIC`` (so no other region's role can even open it, on a shared server too), migrates the
schema, and grants the role what the service does there and nothing more: reading and writing
rows (appends, outbox, inbox, snapshots, retention's deletes under an anchor, erasure) and the
sequences. The tables, their append-only triggers and the schema stay the administrator's: the
region's role can neither drop a trigger nor alter a table.

The URLs handed to a region's processes name the role and never carry its password: every
connection is made from :func:`with_region_password`'s URL, which fills it in from the region's
password file. Where the server authenticates by password (``scram-sha-256``, what the embedded
PostgreSQL asks of every role but its administrator), a region's password opens only its own role;
where it trusts loopback (a development server), what holds is the ``CONNECT`` privilege: a region
role is refused every database but its own whatever password it sends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from safeguards.adapters.keyfiles import read_or_make, state_dir
from safeguards.adapters.store.errors import translate_errors
from safeguards.core.ids import validate_region

log = logging.getLogger(__name__)

ROLE_PREFIX = "sg_"
_ROLE = re.compile(r"sg_([a-z][a-z0-9]{0,15})")
PROVISION_TIMEOUT_S = 60.0


def region_role(region: str) -> str:
    """The login role of ``region``'s processes."""
    return ROLE_PREFIX + validate_region(region)


def region_database(region: str) -> str:
    """The database a region gets on a server it shares (``safeguards_<region>``)."""
    return f"safeguards_{validate_region(region)}"


def region_password(region: str, directory: Path | None = None) -> str:
    """``$SAFEGUARDS_DATABASE_PASSWORD_<REGION>``, else the region's password file (made once)."""
    from_env = os.environ.get(f"SAFEGUARDS_DATABASE_PASSWORD_{validate_region(region).upper()}")
    if from_env:
        return from_env
    return read_or_make(state_dir(directory) / f"postgres-{region}.password",
                        secrets.token_urlsafe(32) + "\n", f"{region}'s PostgreSQL password")


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL keeps for a ``scram-sha-256`` password (RFC 5802/7677), made here so the
    password itself never crosses to the server or lands in its statement log."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}"
            f"${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")


def region_url(server_url: str, region: str, database: str | None = None) -> str:
    """``database`` (default the region's) on ``server_url``'s server, as the region's role;
    the URL holds no password (:func:`with_region_password` adds it when connecting)."""
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{region_role(region)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc,
                                     path=f"/{database or region_database(region)}"))


def with_region_password(database_url: str, directory: Path | None = None) -> str:
    """``database_url`` with the password of the region role it names added, where it names one
    (``sg_<region>``) without a password; any other URL unchanged."""
    parts = urlsplit(database_url)
    match = _ROLE.fullmatch(parts.username or "")
    if match is None or parts.password is not None:
        return database_url
    password = quote(region_password(match.group(1), directory), safe="")
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(
        f"{parts.username}@", f"{parts.username}:{password}@", 1)))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _ensure_role(conn: asyncpg.Connection, role: str, verifier: str) -> None:
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
    secret = await conn.fetchval("SELECT quote_literal($1::text)", verifier)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        try:
            await conn.execute(f"CREATE ROLE {_ident(role)} {attributes} PASSWORD {secret}")
        except asyncpg.DuplicateObjectError:
            # another process of the region made it a moment ago: set what we hold below
            log.info("role %s was made by another process a moment ago", role)
        else:
            return
    await conn.execute(f"ALTER ROLE {_ident(role)} {attributes} PASSWORD {secret}")


async def _ensure_database(conn: asyncpg.Connection, database: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        # another process of the region made it a moment ago: the same database either way
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            await conn.execute(f"CREATE DATABASE {_ident(database)}")


async def _grant(admin_db_url: str, role: str) -> None:
    """The rows and sequences of the migrated schema to ``role``; nothing that changes it."""
    conn = await asyncpg.connect(admin_db_url, timeout=PROVISION_TIMEOUT_S)
    try:
        role_id = _ident(role)
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role_id}")
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                           f"TO {role_id}")
        await conn.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public "
                           f"TO {role_id}")
        # and so for what a later migration by this administrator adds
        await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, "
                           f"UPDATE, DELETE ON TABLES TO {role_id}")
        await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, "
                           f"UPDATE ON SEQUENCES TO {role_id}")
    finally:
        await conn.close()


async def provision_region(admin_url: str, region: str, database: str | None = None, *,
                           directory: Path | None = None) -> str:
    """As the administrator of ``admin_url``'s server: ``region``'s role (its password set to
    the one the region holds) and database (default ``safeguards_<region>``), that database
    closed to every other role, migrated, and its rows granted to the role. Idempotent (a
    restart re-applies it all). Returns the URL the region's processes connect with."""
    from safeguards.adapters.store.migrate import migrate

    role, database = region_role(region), database or region_database(region)
    verifier = scram_verifier(region_password(region, directory))
    admin_db_url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))
    with translate_errors():
        conn = await asyncpg.connect(admin_url, timeout=PROVISION_TIMEOUT_S)
        try:
            await _ensure_role(conn, role, verifier)
            await _ensure_database(conn, database)
            await conn.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {_ident(database)} "
                               f"TO {_ident(role)}")
        finally:
            await conn.close()
        await migrate(admin_db_url)
        await _grant(admin_db_url, role)
    return region_url(admin_url, region, database)
