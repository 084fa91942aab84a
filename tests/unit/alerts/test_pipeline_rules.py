"""Rules on the open pipeline, the weighted pipeline, the forecast, the quota and its attainment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from alerts.errors import ConfigError
from alerts.evaluator import CURRENT, Evaluator, KpiUpdate
from alerts.rules import parse_config

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
UNITS = 10_000  # money units per currency unit
PROBABILITIES = {"new": Decimal("0.1"), "negotiation": Decimal("0.75")}


def rule(rule_id: str, kpi: str, op: str, threshold: str, **more: object) -> dict[str, object]:
    return {
        "id": rule_id,
        "name": rule_id,
        "kpi": kpi,
        "scope": {"kind": "manager"},
        "condition": {"op": op, "threshold": threshold},
        **more,
    }


RULES = [
    rule("thin-pipeline", "open_pipeline", "<", "1000"),
    rule("few-in-negotiation", "open_deals.negotiation", "<", "2"),
    rule("weighted", "weighted_pipeline", "<", "500"),
    rule("forecast-short", "forecast", "<", "2000", period="month"),
    rule("behind-quota", "quota_attainment", "<", "0.5", period="month"),
]


def evaluator() -> Evaluator:
    ev = Evaluator(ZoneInfo("UTC"), probabilities=PROBABILITIES)
    ev.configure(parse_config({"rules": RULES}))
    return ev


def current(seq: str, **measures: int) -> KpiUpdate:
    return KpiUpdate(seq=seq, scope="m:ann", granularity=CURRENT, bucket="", measures=measures)


def month(seq: str, **measures: int) -> KpiUpdate:
    return KpiUpdate(seq=seq, scope="m:ann", granularity="month", bucket="2026-11", measures=measures)


def statuses(ev: Evaluator) -> dict[str, tuple[str, Decimal | None]]:
    return {key.split("|")[0]: (record.state.status, record.state.value) for key, record in ev.series.items()}


def test_pipeline_forecast_and_quota_rules_follow_current_state_and_month() -> None:
    ev = evaluator()
    pipeline = {
        "pipe_n:new": 3,
        "pipe_amt:new": 600 * UNITS,
        "pipe_n:negotiation": 1,
        "pipe_amt:negotiation": 400 * UNITS,
    }
    ev.quotas = {"m:ann": 4000 * UNITS}
    ev.apply_update(current("1-0", **pipeline), NOW, {}, {})
    # The month's revenue is read from the cache when a current-state record comes (forecast).
    assert ("m:ann", "month", "2026-11") in ev.needed_buckets([current("1-0", **pipeline)], NOW)
    assert statuses(ev) == {
        "thin-pipeline": ("ok", Decimal(1000)),
        "few-in-negotiation": ("firing", Decimal(1)),
        "weighted": ("firing", Decimal("360.0000")),  # 600 x 0.1 + 400 x 0.75
        "forecast-short": ("firing", Decimal("360.0000")),  # no revenue known yet
    }
    measures = {("m:ann", CURRENT, ""): pipeline}
    ev.apply_update(month("1-0", revenue=1800 * UNITS), NOW, measures, {})  # the same change: same seq
    found = statuses(ev)
    assert found["forecast-short"] == ("resolved", Decimal("2160.0000"))
    assert found["behind-quota"] == ("firing", Decimal("0.45"))
    # The quota is lowered: the next tick computes the attainment again, without any update.
    ev.quotas = {"m:ann": 3000 * UNITS}
    ev.tick(NOW + timedelta(seconds=1), {**measures, ("m:ann", "month", "2026-11"): {"revenue": 1800 * UNITS}})
    assert statuses(ev)["behind-quota"] == ("resolved", Decimal("0.6"))
    # Without a quota, attainment has no value (and neither goes pending nor fires).
    ev.quotas = {}
    ev.tick(NOW + timedelta(seconds=2), {**measures, ("m:ann", "month", "2026-11"): {"revenue": 1800 * UNITS}})
    assert statuses(ev)["behind-quota"] == ("resolved", None)


def test_pipeline_and_month_kpis_are_validated() -> None:
    with pytest.raises(ConfigError, match="set period: month"):
        parse_config({"rules": [rule("f", "forecast", "<", "1")]})
    with pytest.raises(ConfigError, match="compare must be 'value'"):
        parse_config(
            {
                "rules": [
                    rule("p", "open_pipeline", "<", "1", condition={"op": "<", "threshold": 1, "compare": "change"})
                ]
            }
        )
    with pytest.raises(ConfigError, match="unknown KPI"):
        parse_config({"rules": [rule("p", "open_pipelines", "<", "1")]})
