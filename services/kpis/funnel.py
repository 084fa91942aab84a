"""The sales funnel of a scope over a period, derived from its KPIs (pure; docs/kpis.md, "Funnel").

Stages come in the configured order. A stage's conversion is the entries of the stage after it
over its own entries; after the last open stage comes ``won`` (its entries are the period's
``deals_won``). Every figure is a ratio of counts of the same scope and period, like every
other ratio: never stored, never averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, Field

from services.kpis.measures import KpiValues, ratio

WON = "won"


class StageConversion(BaseModel):
    """One open stage of the funnel and how many of its entries the next stage saw."""

    stage: str
    entries: int = Field(description="stage_entries of this stage in the period")
    next_stage: str = Field(description="the next configured stage; 'won' after the last one")
    conversion_to_next: Decimal | None = Field(
        description="entries of next_stage / entries of this stage (won: deals_won); null when this stage has none"
    )
    drop_off: Decimal | None = Field(description="1 - conversion_to_next; null when conversion_to_next is")


class FunnelValues(BaseModel):
    """The funnel of one scope and period."""

    stages: list[StageConversion]
    won: int = Field(description="deals_won in the period")
    lost: int = Field(description="deals_lost in the period")
    overall_win_conversion: Decimal | None = Field(
        description="deals_won / entries of the first stage; null when the first stage has no entries"
    )
    lost_by_reason: dict[str, int] = Field(description="deals_lost by lost_reason")


def derive_funnel(kpis: KpiValues, stages: Sequence[str]) -> FunnelValues:
    """The funnel over the configured open ``stages`` (in order) from one scope's KPIs of one period."""
    if not stages:
        raise ValueError("the funnel needs at least one open stage")
    entries = [kpis.stage_entries.get(stage, 0) for stage in stages]
    following = [*entries[1:], kpis.deals_won]
    next_names = [*stages[1:], WON]
    rows: list[StageConversion] = []
    for stage, count, next_count, next_name in zip(stages, entries, following, next_names, strict=True):
        conversion = ratio(next_count, count)
        rows.append(
            StageConversion(
                stage=stage,
                entries=count,
                next_stage=next_name,
                conversion_to_next=conversion,
                drop_off=None if conversion is None else 1 - conversion,
            )
        )
    return FunnelValues(
        stages=rows,
        won=kpis.deals_won,
        lost=kpis.deals_lost,
        overall_win_conversion=ratio(kpis.deals_won, entries[0]),
        lost_by_reason=dict(sorted(kpis.lost_by_reason.items())),
    )
