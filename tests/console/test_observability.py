"""Metrics, alert rules, dashboard and runbooks: the rules pass ``promtool check rules``, each
alert links a runbook that names the ``safeguards ops`` commands to run, and every metric the
rules and the dashboard read is exported by a real region process (nodes, relay, classifier and
inline proxy on one endpoint) or the console."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from safeguards.adapters.csp.serving import serving
from safeguards.adapters.csp.upstream import UpstreamApp
from safeguards.adapters.embedded import free_port
from safeguards.adapters.store import migrate
from safeguards.regions.config import RegionConfig
from safeguards.regions.process_metrics import RegionMetrics
from safeguards.regions.stack import RegionStack

from console_support import ConsoleEnv
from store_events import unique_region

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "alerts" / "safeguards.rules.yml"
DASHBOARD = ROOT / "ops" / "dashboards" / "safeguards.json"
METRIC = re.compile(r"\bsafeguards_[a-z0-9_]+")


def _referenced() -> set[str]:
    text = RULES.read_text() + "\n".join(
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    return {re.sub(r"_bucket$", "", m) for m in METRIC.findall(text)}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool (Debian package prometheus) is not installed; .ci/run "
                           "installs it")
def test_promtool_accepts_the_alert_rules() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout)


def test_every_alert_links_a_runbook_that_says_what_to_run() -> None:
    text = RULES.read_text()
    alerts = re.findall(r"- alert: (\w+)", text)
    links = re.findall(r"runbook_url: (\S+)", text)
    assert len(alerts) == len(links) >= 10
    for link in set(links):
        runbook = ROOT / link
        assert runbook.is_file(), link
        body = runbook.read_text()
        assert "**Check.**" in body and "safeguards ops " in body, link
    index = (ROOT / "ops" / "runbooks" / "README.md").read_text()
    assert all(alert in index for alert in alerts)


async def test_the_region_process_and_the_console_export_what_the_rules_read(
        fresh_database_url: str, nats_url: str, console_env: ConsoleEnv) -> None:
    region = unique_region()
    await migrate(fresh_database_url)
    async with serving(UpstreamApp(), "127.0.0.1", free_port(), lifespan="off") as upstream:
        stack = RegionStack(RegionConfig(region, fresh_database_url, nats_url, 4), upstream,
                            nodes=1)
        async with anyio.create_task_group() as tg:
            endpoints = await tg.start(stack.run)
            metrics = RegionMetrics(stack, interval_s=0.2)
            tg.start_soon(metrics.watch_backlog)
            with anyio.fail_after(10):
                while True:
                    if "pending" in metrics.backlog:
                        break
                    await anyio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                exported = (await client.get(f"{endpoints.proxy_url}/metrics")).text
            stack.request_stop()
            metrics.stop()
    async with console_env() as console, console.client(None) as client:
        exported += (await client.get("/metrics")).text
    names = {re.sub(r"_(total|created|bucket|count|sum)$", "", m)
             for m in re.findall(r"^(?:# TYPE )?(safeguards_[a-z0-9_]+)", exported, re.M)}
    names |= {f"{n}_total" for n in names}  # counters are read with their _total suffix
    missing = sorted(n for n in _referenced() if n not in names)
    assert not missing, f"the rules or the dashboard read metrics nobody exports: {missing}"
    assert f'safeguards_relay_backlog{{region="{region}"}} 0.0' in exported
    # trace context peers sent that was not W3C, counted by the nodes and by the adapters
    assert f'safeguards_node_malformed_traceparents_total{{region="{region}"}} ' in exported
    assert "\nsafeguards_adapters_malformed_traceparents_total " in exported
    if shutil.which("promtool"):
        with anyio.fail_after(60):
            linted = await anyio.run_process(["promtool", "check", "metrics"],
                                             input=exported.encode(), check=False)
        said = (linted.stdout + linted.stderr).decode()
        assert "error" not in said.lower(), said
