"""KPI values derived from measures: the quota and its attainment for month periods."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.kpis.measures import REVENUE, derive_kpis, with_quota


def test_derived_kpis_carry_no_quota() -> None:
    kpis = derive_kpis({REVENUE: 150_000_000})
    assert kpis.quota is None and kpis.quota_attainment is None


def test_worked_example_of_docs() -> None:
    ann = with_quota(derive_kpis({REVENUE: 150_000_000}), 200_000_000)
    assert (str(ann.quota), str(ann.quota_attainment)) == ("20000.0000", "0.750000")
    company = with_quota(derive_kpis({REVENUE: 300_000_000}), 430_000_000)
    assert str(company.quota_attainment) == "0.697674"


def test_no_quota_and_a_quota_of_zero_have_no_attainment() -> None:
    kpis = derive_kpis({REVENUE: 10_000})
    assert with_quota(kpis, None).quota is None
    zero = with_quota(kpis, 0)
    assert zero.quota == Decimal("0.0000") and zero.quota_attainment is None


def test_attainment_may_exceed_one_and_the_kpis_are_left_unchanged() -> None:
    kpis = derive_kpis({REVENUE: 30_000, "deals_won": 2})
    over = with_quota(kpis, 20_000)
    assert over.quota_attainment == Decimal("1.500000")
    assert over.model_dump(exclude={"quota", "quota_attainment"}) == kpis.model_dump(
        exclude={"quota", "quota_attainment"}
    )
    assert kpis.quota is None  # with_quota returns a copy


@given(st.integers(0, 10**17), st.integers(1, 10**17))
def test_attainment_is_revenue_over_quota_rounded_to_six_places(revenue: int, quota: int) -> None:
    kpis = with_quota(derive_kpis({REVENUE: revenue}), quota)
    assert kpis.quota is not None and kpis.quota_attainment is not None
    assert int(kpis.quota * 10_000) == quota
    assert abs(Fraction(kpis.quota_attainment) - Fraction(revenue, quota)) <= Fraction(1, 2_000_000)
    assert kpis.quota_attainment.as_tuple().exponent == -6
