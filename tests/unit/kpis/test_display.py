"""KPI values in words: by the KPI's kind, exact decimals rounded only for reading."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.kpis.display import format_kpi_value


@pytest.mark.parametrize(
    ("kpi", "value", "currency", "compare", "shown"),
    [
        ("win_rate", "0.142857", "USD", "value", "14%"),
        ("win_rate", "0.000000", "USD", "value", "0%"),
        ("quota_attainment", "0.004", "USD", "value", "<1%"),
        ("quota_attainment", "1.25", "USD", "value", "125%"),
        ("revenue", "12500.5000", "USD", "value", "$12,501"),
        ("revenue", "-40", "EUR", "change", "-€40"),
        ("avg_deal_size", "900", "CHF", "value", "900 CHF"),
        ("calls", "2019", "USD", "value", "2,019"),
        ("calls", "-0.25", "USD", "change_pct", "-25%"),
        ("deal.days_in_stage", "3.25", "USD", "value", "3.3"),
        ("avg_cycle_days", "12", "USD", "value", "12.0"),
    ],
)
def test_values_by_kind(kpi: str, value: str, currency: str, compare: str, shown: str) -> None:
    assert format_kpi_value(kpi, Decimal(value), currency, compare=compare) == shown


def test_an_undefined_value_is_none() -> None:
    assert format_kpi_value("win_rate", None, "USD") == "none"
