"""Prometheus metrics of the alerts worker, served on their own port (settings.alerts.metrics_port)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

ALERTS_FIRING = Gauge(
    "crm_pulse_alerts_firing", "Alerts firing now, by rule and severity", ["rule_id", "severity"], registry=REGISTRY
)
NOTIFICATIONS = Counter(
    "crm_pulse_alert_notifications",
    "Notification attempts by receiver and outcome (sent, failed, gave_up, duplicate)",
    ["receiver", "outcome"],
    registry=REGISTRY,
)
EVALUATION_LATENCY = Histogram(
    "crm_pulse_alert_evaluation_latency_seconds",
    "From the KPI worker's commit of a change to its evaluation being committed by the alerts worker",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
EVALUATION_DURATION = Histogram(
    "crm_pulse_alert_evaluation_duration_seconds",
    "Time of one evaluation round (updates, tick, commit)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)


def set_firing(firing: Iterable[tuple[str, str]]) -> None:
    """Replace the firing gauge with counts of these (rule_id, severity) pairs."""
    ALERTS_FIRING.clear()
    for (rule_id, severity), count in Tally(firing).items():
        ALERTS_FIRING.labels(rule_id=rule_id, severity=severity).set(count)


def serve(host: str, port: int) -> None:
    """Serve /metrics in a background thread (port 0: not at all)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
