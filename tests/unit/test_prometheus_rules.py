"""The repo's Prometheus scrape configuration and rules pass Debian's promtool, and the alert rules' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_scrape_config_is_valid() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_are_valid() -> None:
    rules = sorted(str(path.relative_to(PROMETHEUS_DIR)) for path in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert len(rules) == 2
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    tested = promtool("test", "rules", "tests/crm_pulse_alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
