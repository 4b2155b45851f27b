"""The embedded default: everything the service needs, on this machine, started by us.

``embedded_infrastructure`` starts NATS (JetStream) and one PostgreSQL per region, each on a free
port with its own data directory, unless the environment names servers to use instead:
``SAFEGUARDS_NATS_URL`` (one server, or a cluster's servers comma-separated);
``SAFEGUARDS_DATABASE_URL_<REGION>`` for one region's database; or
``SAFEGUARDS_DATABASE_URL``, a server on which each region gets its own database
(``safeguards_<region>``), so that no two regions ever share one. On a server it starts or is
named with ``SAFEGUARDS_DATABASE_URL`` (the administrative credential), each region gets its own
login role and password (``store.region_roles``: ``sg_<region>``, the password in the state
folder), the only role that may connect to its database; the regions' processes connect with
that, never with the administrator's (a ``SAFEGUARDS_DATABASE_URL_<REGION>`` is used as given:
provision it with ``safeguards ops provision``). The NATS it starts admits
no one but the regions' role identities (``bus.nats_auth``: gate, node, classifier, operator
per region, keys in the state folder), each allowed only its own region's subjects.
``nats_servers=3`` gives each region a three-node JetStream cluster of its own instead
(``nats_cluster``: routes on loopback, R3 streams, every write fsynced before its ack), admitting
only that region's identities; 1 starts one server for all regions (lighter, nothing
replicated, but the regions there may serve each other's accounts). ``safeguards run`` starts
one server unless told ``--nats-servers 3``.

``run_embedded`` (``safeguards run``) then starts the model stand-in and each region's whole
service (two actor nodes, the classifier adapter, the inline proxy) in its own process, and each
region's operators' console (``regions.consoles``), prints the endpoints and what to try, and on
Ctrl-C drains the regions before the servers stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from safeguards.adapters.bus.nats_auth import make_identities, server_authorization
from safeguards.adapters.embedded import EmbeddedNats, EmbeddedPostgres
from safeguards.adapters.embedded.nats_cluster import EmbeddedNatsCluster
from safeguards.adapters.store.region_roles import PROVISION_TIMEOUT_S, provision_region
from safeguards.regions.config import RegionConfig, env_override


@contextlib.asynccontextmanager
async def embedded_infrastructure(data_dir: Path, regions: tuple[str, ...], *,
                                  nats_servers: int = 1) -> AsyncIterator[list[RegionConfig]]:
    """NATS and a PostgreSQL database per region, embedded unless the environment names them;
    ``nats_servers``: 1 (one server for every region) or 3 (a cluster per region)."""
    with contextlib.ExitStack() as stack:
        shared_nats = env_override("SAFEGUARDS_NATS_URL")
        nats_urls: dict[str, str] = {}
        if shared_nats is None and nats_servers > 1:
            for region in regions:  # a region's cluster admits only that region's roles
                cluster = EmbeddedNatsCluster(
                    data_dir / f"nats-{region}", size=nats_servers, name=f"sg-{region}",
                    authorization=server_authorization(make_identities((region,))))
                stack.callback(cluster.close)
                await anyio.to_thread.run_sync(cluster.start)
                nats_urls[region] = cluster.url
        elif shared_nats is None:
            # Our own server admits only the regions' role identities, each to its own subjects
            # (and, home routing, metadata and scores to a peer's inputs: ``core.homes``)
            nats = EmbeddedNats(data_dir / "nats", authorization=server_authorization(
                make_identities(regions), home_routing=True))
            stack.callback(nats.close)
            await anyio.to_thread.run_sync(nats.start)
            shared_nats = nats.url
        configs = []
        for region in regions:
            nats_url = nats_urls.get(region) or shared_nats
            assert nats_url is not None
            db_url = os.environ.get(f"SAFEGUARDS_DATABASE_URL_{region.upper()}") or None
            admin_url = env_override("SAFEGUARDS_DATABASE_URL")
            if db_url is None and admin_url is None:
                pg = EmbeddedPostgres(data_dir / f"postgres-{region}")
                stack.callback(pg.close)
                await anyio.to_thread.run_sync(pg.start)
                admin_url = pg.url()
            if db_url is None:
                assert admin_url is not None
                with anyio.fail_after(PROVISION_TIMEOUT_S * 2):  # role, database, migration
                    db_url = await provision_region(admin_url, region)
            configs.append(RegionConfig(name=region, database_url=db_url, nats_url=nats_url))
        yield configs


NEXT_STEPS = """
Try it (the official anthropic SDK works against the proxy unmodified):

  .venv/bin/python - <<'PY'
  import anthropic
  client = anthropic.Anthropic(base_url="{proxy}", api_key="unused",
                               default_headers={{"x-csp-account-id": "demo-account"}})
  print(client.messages.create(model="claude-demo", max_tokens=64,
                               messages=[{{"role": "user", "content": "Hello!"}}]).content)
  PY

  .venv/bin/safeguards simulate --json          # attacker and benign personas, scored
  .venv/bin/safeguards ops history demo-account --region {region} --database-url {db}
  .venv/bin/safeguards ops rca demo-account --region {region} --database-url {db} --out rca.html
"""


async def run_embedded(data_dir: Path, regions: tuple[str, ...], nats_servers: int = 1) -> None:
    from safeguards.adapters.store import migrate
    from safeguards.regions.consoles import LOCAL_ADMIN, ensure_local_admin, running_consoles
    from safeguards.regions.stack import running_stack

    await anyio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with embedded_infrastructure(data_dir, regions,
                                           nats_servers=nats_servers) as configs:
            for cfg in configs:  # idempotent: a restart finds the schema at head
                revision = await migrate(cfg.database_url)
                print(f"region {cfg.name}: schema migrated (revision {revision})", flush=True)
            made = [cfg.name for cfg in configs if ensure_local_admin(cfg.name)]
            async with running_stack(configs) as endpoints, \
                    running_consoles(configs, endpoints) as consoles:
                print("\nsafeguards is running on its embedded default (data in "
                      f"{data_dir}):\n{endpoints.describe()}")
                for region, url in consoles.items():
                    print(f"  operators' console of {region}: {url}/  (sign in: "
                          f".venv/bin/safeguards console-link NAME --region {region} "
                          f"--url {url}, then open the link)")
                if made:
                    print(f"  (made operator '{LOCAL_ADMIN}', an admin, in {', '.join(made)}: "
                          "its key is in the state folder)")
                first = next(iter(endpoints.regions.values()))
                print(NEXT_STEPS.format(proxy=first.proxy_url, region=first.region,
                                        db=first.database_url))
                print("Press Ctrl-C to stop (regions drain first, then the servers).",
                      flush=True)
                async for _ in signals:
                    print("stopping: draining the regions ...", flush=True)
                    break
        print("stopped.", flush=True)
