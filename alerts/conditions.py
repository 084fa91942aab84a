"""Pure evaluation of a rule's condition: the number compared, breach and recovery (hysteresis)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from services.kpis.measures import KpiValues, derive_kpis, derive_pipeline, with_quota
from services.schemas.alerts import Condition

PERCENT_PLACES = Decimal("0.01")


def kpi_value(kpis: KpiValues, path: str) -> Decimal | None:
    """The value of a KPI path (``calls``, ``stage_entries.new``, ``by_source.web.revenue``); None = no value."""
    parts = path.split(".")
    if len(parts) == 1:
        value = getattr(kpis, path)
    elif len(parts) == 2:
        family: dict[str, int] = getattr(kpis, parts[0])
        value = family.get(parts[1], 0)
    else:
        source = kpis.by_source.get(parts[1])
        value = getattr(source, parts[2]) if source is not None else (None if parts[2] == "win_share" else 0)
    return None if value is None else Decimal(value)


def measured_value(path: str, measures: Mapping[str, int]) -> Decimal | None:
    """A KPI's value derived from one bucket's additive measures."""
    return kpi_value(derive_kpis(measures), path)


def pipeline_value(path: str, current: Mapping[str, int], probabilities: Mapping[str, Decimal]) -> Decimal:
    """``open_deals``, ``open_pipeline``, ``weighted_pipeline`` (or ``open_deals.<stage>``,
    ``open_pipeline.<stage>``) of a scope's current-state measures."""
    pipeline = derive_pipeline(current, probabilities)
    name, _, stage = path.partition(".")
    if stage:
        one = pipeline.stages.get(stage)
        if one is None:
            return Decimal(0)
        return Decimal(one.open_deals) if name == "open_deals" else one.amount
    if name == "open_deals":
        return Decimal(pipeline.open_deals)
    return pipeline.amount if name == "open_pipeline" else pipeline.weighted_pipeline


def month_value(
    path: str,
    month: Mapping[str, int],
    current: Mapping[str, int],
    quota_units: int | None,
    probabilities: Mapping[str, Decimal],
) -> Decimal | None:
    """``quota``, ``quota_attainment`` (None without a quota) or ``forecast`` (the month's revenue so
    far + the weighted pipeline) of a scope in the current month."""
    kpis = derive_kpis(month)
    if path == "forecast":
        return kpis.revenue + derive_pipeline(current, probabilities).weighted_pipeline
    with_target = with_quota(kpis, quota_units)
    return with_target.quota if path == "quota" else with_target.quota_attainment


def compared_value(condition: Condition, current: Decimal | None, previous: Decimal | None) -> Decimal | None:
    """The number a condition compares: the value, or its change against the previous period."""
    if condition.compare == "value":
        return current
    if current is None or previous is None:
        return None
    change = current - previous
    if condition.compare == "change":
        return change
    if previous == 0:
        return None
    return (change * 100 / previous).quantize(PERCENT_PLACES)


def _holds(op: str, value: Decimal, threshold: Decimal) -> bool:
    if op in (">", "crosses_above"):
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op in ("<", "crosses_below"):
        return value < threshold
    return value <= threshold


def breaches(condition: Condition, value: Decimal) -> bool:
    """The value is beyond the threshold (a level; crossings add their arming in the state machine)."""
    return _holds(condition.op, value, condition.threshold)


def recovered(condition: Condition, value: Decimal) -> bool:
    """A firing alert with this value resolves: it is back beyond the recovery threshold."""
    recovery = condition.recovery_threshold if condition.recovery_threshold is not None else condition.threshold
    return not _holds(condition.op, value, recovery)


def is_crossing(condition: Condition) -> bool:
    return condition.op in ("crosses_above", "crosses_below")
