"""The additive measures kept per scope and bucket, and the KPI values derived from them.

State only ever holds integers that add up: counts, sums of seconds, sums of money in
units of 1/MONEY_SCALE. Every ratio of the contract is derived here, when read, from the
measures of one scope and one period; ratios are never stored and never averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from pydantic import BaseModel, Field

from services.schemas.events import MONEY_SCALE, amount_units, units_to_decimal

Measures = dict[str, int]
"""One bucket's additive measures: field name -> integer."""

# Plain counters and sums (hash fields).
CALLS = "calls"
MEETINGS = "meetings"
PROPOSALS = "proposals"
CALL_DURATION_S = "call_duration_s"
DEALS_CREATED = "deals_created"
DEALS_WON = "deals_won"
DEALS_LOST = "deals_lost"
REVENUE = "revenue"
CYCLE_US = "cycle_us"
"""Sum over won deals with a known deal_created of (won - created) in microseconds."""
CYCLE_DEALS = "cycle_deals"
REPEAT_DEALS = "repeat_deals"
REPEAT_REVENUE = "repeat_revenue"
NEW_CUSTOMERS = "new_customers"

# Families of measures keyed by a name (hash field = prefix + name).
STAGE_PREFIX = "stage:"
LOST_PREFIX = "lost:"
SOURCE_CREATED_PREFIX = "src_created:"
SOURCE_WON_PREFIX = "src_won:"
SOURCE_REVENUE_PREFIX = "src_revenue:"
PIPELINE_COUNT_PREFIX = "pipe_n:"
PIPELINE_AMOUNT_PREFIX = "pipe_amt:"

MONEY_FIELDS_EXACT = frozenset({REVENUE, REPEAT_REVENUE})
MONEY_PREFIXES = (SOURCE_REVENUE_PREFIX, PIPELINE_AMOUNT_PREFIX)

RATIO_PLACES = Decimal("0.000001")
US_PER_DAY = 86_400 * 1_000_000


def stage_entries(stage: str) -> str:
    return STAGE_PREFIX + stage


def lost_reason(reason: str) -> str:
    return LOST_PREFIX + reason


def source_created(source: str) -> str:
    return SOURCE_CREATED_PREFIX + source


def source_won(source: str) -> str:
    return SOURCE_WON_PREFIX + source


def source_revenue(source: str) -> str:
    return SOURCE_REVENUE_PREFIX + source


def pipeline_count(stage: str) -> str:
    return PIPELINE_COUNT_PREFIX + stage


def pipeline_amount(stage: str) -> str:
    return PIPELINE_AMOUNT_PREFIX + stage


def is_money(field: str) -> bool:
    return field in MONEY_FIELDS_EXACT or field.startswith(MONEY_PREFIXES)


def add_measures(total: Measures, more: Mapping[str, int]) -> Measures:
    """Add ``more`` into ``total`` in place and return it."""
    for field, value in more.items():
        total[field] = total.get(field, 0) + value
    return total


def sum_measures(parts: Iterable[Mapping[str, int]]) -> Measures:
    total: Measures = {}
    for part in parts:
        add_measures(total, part)
    return total


def decode_hash(raw: Mapping[bytes | str, bytes | str]) -> Measures:
    """A Redis hash of measures as ints."""
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def ratio(numerator: int, denominator: int) -> Decimal | None:
    """An exact ratio shown to six decimal places (half even); None when the denominator is 0."""
    if denominator == 0:
        return None
    exact = Fraction(numerator, denominator)
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(RATIO_PLACES, rounding=ROUND_HALF_EVEN)


def money_ratio(units: int, count: int) -> Decimal | None:
    """Money divided by a count, e.g. average deal size."""
    if count == 0:
        return None
    return (Decimal(units) / Decimal(count) / MONEY_SCALE).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def _family(measures: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {field[len(prefix) :]: value for field, value in measures.items() if field.startswith(prefix) and value}


class SourceKpis(BaseModel):
    """Deals created and won, and revenue, of one lead source."""

    deals_created: int = 0
    deals_won: int = 0
    revenue: Decimal = Decimal(0)
    win_share: Decimal | None = Field(None, description="deals_won / deals_created for this lead source")


class KpiValues(BaseModel):
    """The KPIs of CONTRACT section 3 for one scope and one period."""

    calls: int = 0
    meetings: int = 0
    proposals: int = 0
    call_duration_s: int = 0
    deals_created: int = 0
    deals_won: int = 0
    deals_lost: int = 0
    revenue: Decimal = Decimal(0)
    avg_deal_size: Decimal | None = None
    win_rate: Decimal | None = None
    avg_cycle_days: Decimal | None = None
    stage_entries: dict[str, int] = Field(default_factory=dict)
    lost_by_reason: dict[str, int] = Field(default_factory=dict)
    by_source: dict[str, SourceKpis] = Field(default_factory=dict)
    repeat_deals: int = 0
    repeat_revenue: Decimal = Decimal(0)
    new_customers: int = 0
    quota: Decimal | None = Field(
        None, description="month periods: the scope's quota for the month (see docs/kpis.md); null otherwise"
    )
    quota_attainment: Decimal | None = Field(None, description="revenue / quota; null without a quota or when it is 0")


def derive_kpis(measures: Mapping[str, int]) -> KpiValues:
    """Every KPI of one scope and period, derived from its additive measures."""
    get = measures.get
    won = get(DEALS_WON, 0)
    lost = get(DEALS_LOST, 0)
    revenue = get(REVENUE, 0)
    cycle_deals = get(CYCLE_DEALS, 0)
    sources: dict[str, SourceKpis] = {}
    created_by_source = _family(measures, SOURCE_CREATED_PREFIX)
    won_by_source = _family(measures, SOURCE_WON_PREFIX)
    revenue_by_source = _family(measures, SOURCE_REVENUE_PREFIX)
    for source in sorted(set(created_by_source) | set(won_by_source) | set(revenue_by_source)):
        created_n = created_by_source.get(source, 0)
        won_n = won_by_source.get(source, 0)
        sources[source] = SourceKpis(
            deals_created=created_n,
            deals_won=won_n,
            revenue=units_to_decimal(revenue_by_source.get(source, 0)),
            win_share=ratio(won_n, created_n),
        )
    return KpiValues(
        calls=get(CALLS, 0),
        meetings=get(MEETINGS, 0),
        proposals=get(PROPOSALS, 0),
        call_duration_s=get(CALL_DURATION_S, 0),
        deals_created=get(DEALS_CREATED, 0),
        deals_won=won,
        deals_lost=lost,
        revenue=units_to_decimal(revenue),
        avg_deal_size=money_ratio(revenue, won),
        win_rate=ratio(won, won + lost),
        avg_cycle_days=ratio(get(CYCLE_US, 0), cycle_deals * US_PER_DAY),
        stage_entries=_family(measures, STAGE_PREFIX),
        lost_by_reason=_family(measures, LOST_PREFIX),
        by_source=sources,
        repeat_deals=get(REPEAT_DEALS, 0),
        repeat_revenue=units_to_decimal(get(REPEAT_REVENUE, 0)),
        new_customers=get(NEW_CUSTOMERS, 0),
    )


def with_quota(kpis: KpiValues, quota_units: int | None) -> KpiValues:
    """The KPIs with a month's quota (money units) and its attainment, revenue / quota; without a
    quota both are None, and so is the attainment of a quota of 0."""
    if quota_units is None:
        return kpis.model_copy(update={"quota": None, "quota_attainment": None})
    return kpis.model_copy(
        update={
            "quota": units_to_decimal(quota_units),
            "quota_attainment": ratio(amount_units(kpis.revenue), quota_units),
        }
    )


class StagePipeline(BaseModel):
    """Open deals of one funnel stage: count, amount, win probability and weighted amount."""

    open_deals: int = 0
    amount: Decimal = Decimal(0)
    probability: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)


class PipelineValues(BaseModel):
    """Current open pipeline of a scope (not a period)."""

    stages: dict[str, StagePipeline] = Field(default_factory=dict)
    open_deals: int = 0
    amount: Decimal = Decimal(0)
    weighted_pipeline: Decimal = Decimal(0)


def derive_pipeline(measures: Mapping[str, int], probabilities: Mapping[str, Decimal]) -> PipelineValues:
    """Open deals and amounts per stage, and the weighted pipeline, from current-state measures."""
    counts = _family(measures, PIPELINE_COUNT_PREFIX)
    amounts = _family(measures, PIPELINE_AMOUNT_PREFIX)
    stages: dict[str, StagePipeline] = {}
    weighted_units = Fraction(0)
    for stage, probability in probabilities.items():
        units = amounts.get(stage, 0)
        weighted_units += Fraction(units) * Fraction(probability)
        stages[stage] = StagePipeline(
            open_deals=counts.get(stage, 0),
            amount=units_to_decimal(units),
            probability=probability,
            weighted=(Decimal(units) * probability / MONEY_SCALE).quantize(Decimal("0.0001")),
        )
    weighted = Decimal(weighted_units.numerator) / Decimal(weighted_units.denominator) / MONEY_SCALE
    return PipelineValues(
        stages=stages,
        open_deals=sum(counts.values()),
        amount=units_to_decimal(sum(amounts.values())),
        weighted_pipeline=weighted.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN),
    )
