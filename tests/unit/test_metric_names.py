"""Every metric name the Grafana dashboards and the Prometheus rules query is one the product exports
(the API's, the stream worker's and the alerts worker's registries) or a recording rule's output."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from alerts.metrics import REGISTRY as ALERTS_REGISTRY
from dashboard_api.business_metrics import BusinessMetricsCollector
from dashboard_api.metrics import ApiMetrics, WorkerStats
from services.kpi_figures import PERIODS, BusinessFigures, ScopeFigures
from services.kpis.measures import KpiValues, PipelineValues, StagePipeline
from services.settings import Settings
from streams.worker_metrics import WorkerMetrics

INFRA = Path(__file__).resolve().parents[2] / "infra"
METRIC_NAME = re.compile(r"\b(crm_[a-z0-9_:]+)")
"""The product's names all start with ``crm_``; PromQL functions, labels and ``up`` do not."""
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
"""Label values in a query (``job="crm_pulse_api"``) are not metric names."""


def names_in(expr: str) -> list[str]:
    return METRIC_NAME.findall(QUOTED.sub('""', expr))


SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def full_figures() -> BusinessFigures:
    """Figures where every optional gauge has a value (ratios, quota), so every family has samples."""
    kpis = KpiValues(
        calls=1, revenue=Decimal(1), win_rate=Decimal("0.5"), quota=Decimal(2), quota_attainment=Decimal("0.5")
    )
    pipeline = PipelineValues(stages={"proposal": StagePipeline(open_deals=1, amount=Decimal(1))})
    company = ScopeFigures(
        kind="company",
        team_id="",
        manager_id="",
        kpis=dict.fromkeys(PERIODS, kpis),
        pipeline=pipeline,
        forecast=Decimal(1),
    )
    return BusinessFigures(day=date(2026, 11, 27), scopes=[company])


def registries() -> Iterator[CollectorRegistry]:
    api = ApiMetrics()
    api.worker.update(WorkerStats(processed=1, rejected={"too_old": 1}), {("crm.events", "0"): 1})
    business = BusinessMetricsCollector(Settings())
    business.figures = full_figures()
    api.registry.register(business)
    yield api.registry
    yield WorkerMetrics().registry
    yield ALERTS_REGISTRY


def exported_names() -> set[str]:
    names: set[str] = set()
    for registry in registries():
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ()))
    return names


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((INFRA / "prometheus" / "rules").glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def queried_names() -> dict[str, set[str]]:
    """{where: names queried there} for each dashboard and each rule."""
    queried: dict[str, set[str]] = {}
    for path in sorted((INFRA / "grafana" / "dashboards").glob("*.json")):
        exprs = list(dashboard_exprs(json.loads(path.read_text())))
        assert exprs, f"{path.name} has no query"
        queried[path.name] = {name for expr in exprs for name in names_in(expr)}
    for group in rule_groups():
        for rule in group["rules"]:
            queried[rule.get("record") or rule["alert"]] = set(names_in(rule["expr"]))
    return queried


def test_every_queried_metric_name_is_exported_or_recorded() -> None:
    known = exported_names() | {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }
    queried = queried_names()

    unknown = {where: sorted(names - known) for where, names in queried.items() if names - known}
    assert not unknown, f"queried but neither exported nor recorded: {unknown}"
    # The check has something to check: the dashboards query the business gauges and the worker counters.
    everything = set().union(*queried.values())
    assert {"crm_pulse_kpi_calls", "crm_events_rejected_total", "crm_pulse:consumer_lag:sum"} <= everything


def test_the_name_check_catches_a_misspelled_name() -> None:
    assert "crm_pulse_kpi_cals" not in exported_names()
    assert names_in('sum by (team) (crm_pulse_kpi_cals{job="crm_pulse_api"})') == ["crm_pulse_kpi_cals"]
