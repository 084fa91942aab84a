"""The funnel: stage entries in configured order, conversion to the next stage, drop-off, overall win."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kpis.funnel import derive_funnel
from services.kpis.measures import KpiValues, derive_kpis, lost_reason, stage_entries

STAGES = ("new", "qualified", "proposal", "negotiation")


def test_worked_example_of_docs() -> None:
    measures = {
        stage_entries("new"): 10,
        stage_entries("qualified"): 6,
        stage_entries("proposal"): 3,
        stage_entries("negotiation"): 2,
        "deals_won": 1,
        "deals_lost": 4,
        lost_reason("price"): 3,
        lost_reason("timing"): 1,
    }
    funnel = derive_funnel(derive_kpis(measures), STAGES)

    assert [(s.stage, s.entries, s.next_stage) for s in funnel.stages] == [
        ("new", 10, "qualified"),
        ("qualified", 6, "proposal"),
        ("proposal", 3, "negotiation"),
        ("negotiation", 2, "won"),
    ]
    assert [str(s.conversion_to_next) for s in funnel.stages] == ["0.600000", "0.500000", "0.666667", "0.500000"]
    assert [str(s.drop_off) for s in funnel.stages] == ["0.400000", "0.500000", "0.333333", "0.500000"]
    assert (funnel.won, funnel.lost) == (1, 4)
    assert funnel.overall_win_conversion == Decimal("0.100000")
    assert funnel.lost_by_reason == {"price": 3, "timing": 1}


def test_stages_follow_the_configured_order_and_unconfigured_stages_are_left_out() -> None:
    kpis = KpiValues(stage_entries={"demo": 4, "lead": 8, "retired": 5}, deals_won=2)
    funnel = derive_funnel(kpis, ("lead", "demo", "contract"))
    assert [(s.stage, s.entries) for s in funnel.stages] == [("lead", 8), ("demo", 4), ("contract", 0)]
    assert funnel.stages[1].conversion_to_next == Decimal(0)
    assert funnel.stages[1].drop_off == Decimal(1)


def test_empty_stages_have_no_conversion() -> None:
    funnel = derive_funnel(KpiValues(), STAGES)
    assert all(s.conversion_to_next is None and s.drop_off is None for s in funnel.stages)
    assert funnel.overall_win_conversion is None
    assert (funnel.won, funnel.lost, funnel.lost_by_reason) == (0, 0, {})


def test_more_entries_downstream_give_a_negative_drop_off() -> None:
    # Deals created directly in a later stage enter it without passing the earlier one.
    funnel = derive_funnel(KpiValues(stage_entries={"new": 2, "qualified": 3}), STAGES)
    assert funnel.stages[0].conversion_to_next == Decimal("1.500000")
    assert funnel.stages[0].drop_off == Decimal("-0.500000")


def test_a_funnel_needs_a_stage() -> None:
    with pytest.raises(ValueError, match="at least one"):
        derive_funnel(KpiValues(), ())


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=6), st.integers(0, 10**9))
def test_conversion_is_the_exact_ratio_rounded_and_drop_off_its_complement(entries: list[int], won: int) -> None:
    stages = tuple(f"s{i}" for i in range(len(entries)))
    kpis = KpiValues(stage_entries=dict(zip(stages, entries, strict=True)), deals_won=won)
    funnel = derive_funnel(kpis, stages)
    following = [*entries[1:], won]
    for row, count, next_count in zip(funnel.stages, entries, following, strict=True):
        if count == 0:
            assert row.conversion_to_next is None and row.drop_off is None
            continue
        assert row.conversion_to_next is not None and row.drop_off is not None
        assert abs(Fraction(row.conversion_to_next) - Fraction(next_count, count)) <= Fraction(1, 2_000_000)
        assert row.conversion_to_next + row.drop_off == 1
        assert row.drop_off.as_tuple().exponent == -6
    overall = funnel.overall_win_conversion
    if entries[0] == 0:
        assert overall is None
    else:
        assert overall is not None
        assert abs(Fraction(overall) - Fraction(won, entries[0])) <= Fraction(1, 2_000_000)
