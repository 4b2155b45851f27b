"""The composition root of the embedded default: servers, schemas and the region's services."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio

from safeguards.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from safeguards.regions.config import RegionConfig, env_override


@contextmanager
def embedded_infrastructure(data_dir: Path, regions: tuple[str, ...]) -> Iterator[
    list[RegionConfig]
]:
    """Start (or reuse, via the environment) NATS and one PostgreSQL per region."""
    with ExitStack() as stack:
        nats_url = env_override("SAFEGUARDS_NATS_URL")
        if nats_url is None:
            nats_url = stack.enter_context(EmbeddedNats(data_dir / "nats")).url
        configs = []
        for region in regions:
            db_url = env_override("SAFEGUARDS_DATABASE_URL")
            if db_url is None:
                pg = stack.enter_context(EmbeddedPostgres(data_dir / f"postgres-{region}"))
                db_url = pg.create_database(f"safeguards_{region}")
            configs.append(RegionConfig(name=region, database_url=db_url, nats_url=nats_url))
        yield configs


async def run_embedded(data_dir: Path, regions: tuple[str, ...]) -> None:
    await anyio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    with embedded_infrastructure(data_dir, regions) as configs:
        print("safeguards is running on its embedded default:")
        print(f"  NATS (JetStream)   {configs[0].nats_url}")
        for cfg in configs:
            print(f"  region {cfg.name:<4} PostgreSQL {cfg.database_url}")
        from safeguards.adapters.store import migrate

        for cfg in configs:  # idempotent: a restart finds the schema at head
            revision = await migrate(cfg.database_url)
            print(f"  region {cfg.name:<4} schema migrated (revision {revision})", flush=True)
        from safeguards.regions.nodes import RegionNodes

        async with anyio.create_task_group() as tg:
            # Two account-actor nodes per region (they split its partitions by lease); each
            # migrates its region's store before it starts.
            regional = [RegionNodes(cfg, count=2) for cfg in configs]
            for group in regional:
                await tg.start(group.run)
            print(f"  account actors    {len(regional) * 2} nodes (2 per region)")
            print("Press Ctrl-C to stop.", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    print("stopping ...", flush=True)
                    break
            for group in regional:
                group.request_stop()
