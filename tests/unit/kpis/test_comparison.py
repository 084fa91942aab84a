"""Change between periods, and ranking keys."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kpis.comparison import NUMERIC_KPIS, compare_kpis, kpi_change, ranking_key
from services.kpis.measures import KpiValues


def test_numeric_kpis_are_the_scalar_fields() -> None:
    assert NUMERIC_KPIS == (
        "calls",
        "meetings",
        "proposals",
        "call_duration_s",
        "deals_created",
        "deals_won",
        "deals_lost",
        "revenue",
        "avg_deal_size",
        "win_rate",
        "avg_cycle_days",
        "repeat_deals",
        "repeat_revenue",
        "new_customers",
        "quota",
        "quota_attainment",
    )


@pytest.mark.parametrize(
    ("current", "previous", "delta", "percent"),
    [
        (12, 8, 4, Decimal("50.00")),
        (1, 3, -2, Decimal("-66.67")),
        (5, 0, 5, None),
        (0, 0, 0, None),
        (Decimal("1.5"), Decimal("1.2"), Decimal("0.3"), Decimal("25.00")),
        (None, Decimal("1"), None, None),
        (Decimal("1"), None, None, None),
    ],
)
def test_kpi_change(
    current: int | Decimal | None, previous: int | Decimal | None, delta: object, percent: object
) -> None:
    change = kpi_change(current, previous)

    assert change.delta == delta
    assert change.percent == percent


def test_integer_deltas_stay_integers() -> None:
    assert isinstance(kpi_change(3, 1).delta, int)


@given(st.integers(0, 10**9), st.integers(1, 10**9))
def test_percent_is_the_relative_change_rounded_to_cents(current: int, previous: int) -> None:
    percent = kpi_change(current, previous).percent
    assert percent is not None
    assert abs(percent - Decimal(current - previous) * 100 / previous) <= Decimal("0.005")


def test_compare_covers_every_numeric_kpi() -> None:
    changes = compare_kpis(KpiValues(calls=3, revenue=Decimal("10")), KpiValues(calls=1))

    assert set(changes) == set(NUMERIC_KPIS)
    assert changes["calls"].percent == Decimal("200.00")
    assert changes["revenue"].delta == Decimal("10")
    assert changes["win_rate"].delta is None


def test_ranking_puts_undefined_values_last() -> None:
    rows = [KpiValues(win_rate=None), KpiValues(win_rate=Decimal("0.1")), KpiValues(win_rate=Decimal("0"))]

    ranked = sorted(rows, key=lambda kpis: ranking_key(kpis, "win_rate"), reverse=True)

    assert [kpis.win_rate for kpis in ranked] == [Decimal("0.1"), Decimal("0"), None]


def test_ranking_by_a_family_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot rank by 'stage_entries'"):
        ranking_key(KpiValues(), "stage_entries")
