"""Comparing one period's KPIs with another's: absolute and relative change, and ranking keys.

Pure functions over :class:`~services.kpis.measures.KpiValues`; the numeric KPIs are the
scalar fields of that model (counts, money, ratios), so a KPI added there is compared here
without further changes.
"""

from __future__ import annotations

import types
import typing
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import BaseModel, Field

from services.kpis.measures import KpiValues

PERCENT_PLACES = Decimal("0.01")


def _is_scalar_number(annotation: Any) -> bool:
    if annotation in (int, Decimal):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return len(members) == 1 and members[0] in (int, Decimal)
    return False


NUMERIC_KPIS: tuple[str, ...] = tuple(
    name for name, field in KpiValues.model_fields.items() if _is_scalar_number(field.annotation)
)
"""The scalar KPIs (counts, money, ratios), in catalogue order: what can be compared and ranked."""


class KpiChange(BaseModel):
    """How one KPI moved from the previous period to this one."""

    delta: int | Decimal | None = Field(description="current - previous; null when either is undefined")
    percent: Decimal | None = Field(
        description="delta / previous * 100, two decimals; null when previous is 0 or undefined"
    )


def kpi_change(current: int | Decimal | None, previous: int | Decimal | None) -> KpiChange:
    """The absolute and percentage change of one KPI value."""
    if current is None or previous is None:
        return KpiChange(delta=None, percent=None)
    delta = current - previous
    if previous == 0:
        return KpiChange(delta=delta, percent=None)
    percent = (Decimal(delta) * 100 / Decimal(previous)).quantize(PERCENT_PLACES, rounding=ROUND_HALF_EVEN)
    return KpiChange(delta=delta, percent=percent)


def compare_kpis(current: KpiValues, previous: KpiValues) -> dict[str, KpiChange]:
    """The change of every numeric KPI between two periods."""
    return {name: kpi_change(getattr(current, name), getattr(previous, name)) for name in NUMERIC_KPIS}


def ranking_key(kpis: KpiValues, kpi: str) -> tuple[bool, Decimal]:
    """Sort key for a descending ranking on one KPI: undefined values rank last."""
    if kpi not in NUMERIC_KPIS:
        raise ValueError(f"cannot rank by {kpi!r}; choose one of {list(NUMERIC_KPIS)}")
    value = getattr(kpis, kpi)
    return (value is not None, Decimal(value) if value is not None else Decimal(0))
