"""A real Prometheus (Debian's package) with the repo's scrape configuration and rules scrapes the
running API and answers the business gauges with the values the REST API gives."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tests.integration.api_harness import wait_until
from tests.integration.test_business_metrics import rest, seed
from tests.integration.worker_process import stop_process

if TYPE_CHECKING:
    from tests.integration.api_harness import RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (scripts/setup)",
    ),
]

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
PORTS = range(47000, 47100)
"""The loopback ports this test may give Prometheus."""
SCRAPE_INTERVAL = "1s"
"""The repo's 15 s interval shortened, so the test waits seconds, not minutes; jobs and rules stay as they are."""


def free_port_in(ports: range) -> int:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free loopback port in {ports.start}-{ports.stop - 1}")


def promtool(cwd: Path, *args: str) -> None:
    checked = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def prometheus_dir(tmp_path: Path, api_port: int) -> Path:
    """A copy of infra/prometheus whose file-sd target files name the test's API (no workers, no alerts worker)."""
    config_dir = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, config_dir)
    config_file = config_dir / "prometheus.yml"
    config: dict[str, Any] = yaml.safe_load(config_file.read_text())
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    config_file.write_text(yaml.safe_dump(config))
    targets = config_dir / "targets"
    (targets / "api.yml").write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{api_port}"]}]))
    (targets / "worker.yml").write_text("[]\n")
    (targets / "alerts.yml").write_text("[]\n")
    promtool(config_dir, "check", "config", "prometheus.yml")
    promtool(config_dir, "check", "rules", *(str(path) for path in sorted((config_dir / "rules").glob("*.yml"))))
    return config_dir


@contextlib.contextmanager
def running_prometheus(config_dir: Path, storage: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Prometheus on 127.0.0.1:port for the block, stopped by its PID afterwards."""
    log = (storage.parent / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=config_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        stop_process(process, timeout=20)
        log.close()


async def test_prometheus_scrapes_the_api_and_answers_the_rest_apis_numbers(api: RunningApi, tmp_path: Path) -> None:
    await seed(api)
    team_month = (await rest(api, "kpis/teams/north", period="month"))["kpis"]
    company_today = (await rest(api, "kpis/company", period="day"))["kpis"]
    pipeline = await rest(api, "pipeline/company")
    expected = {
        'crm_pulse_kpi_calls{scope="team",team="north",period="month"}': float(team_month["calls"]),
        'crm_pulse_kpi_revenue{scope="team",team="north",period="month"}': float(Decimal(team_month["revenue"])),
        'crm_pulse_kpi_calls{scope="company",period="today"}': float(company_today["calls"]),
        'crm_pulse_kpi_forecast{scope="company",period="month"}': float(Decimal(str(pipeline["forecast"]))),
    }
    assert expected['crm_pulse_kpi_calls{scope="team",team="north",period="month"}'] == 80  # not two empty answers

    port = free_port_in(PORTS)
    config_dir = prometheus_dir(tmp_path, api.port)
    with running_prometheus(config_dir, tmp_path / "data", port) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as prometheus:

            async def query(expr: str) -> float | None:
                if process.poll() is not None:
                    log = (tmp_path / "prometheus.log").read_text(errors="replace")
                    raise AssertionError(f"prometheus exited with {process.returncode}: {log[-2000:]}")
                try:
                    response = await prometheus.get("/api/v1/query", params={"query": expr})
                except httpx.TransportError:
                    return None  # not listening yet
                result = response.json()["data"]["result"] if response.status_code == 200 else []
                return float(result[0]["value"][1]) if len(result) == 1 else None

            async def answers() -> dict[str, float | None]:
                return {expr: await query(expr) for expr in expected}

            async def all_answered() -> bool:
                return all(value is not None for value in (await answers()).values())

            await wait_until(all_answered, within=60, interval=0.5, what="Prometheus to scrape the API's gauges")
            assert await answers() == expected
            assert await query('up{job="crm_pulse_api"}') == 1

            rules = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
            assert {group["name"] for group in rules} == {
                "crm_pulse_health",
                "crm_pulse_pipeline",
                "crm_pulse_business",
            }
            assert all(rule["health"] != "err" for group in rules for rule in group["rules"])
