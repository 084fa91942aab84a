"""KPI values as people read them in messages: percentages, money in the currency, counts.

The wall display's ``format.js`` says the same in the browser; alert summaries use these. Exact
values stay in the data (the history's ``value``); only the words are rounded.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MONEY_KPIS = frozenset(
    {"revenue", "avg_deal_size", "quota", "repeat_revenue", "weighted_pipeline", "forecast", "amount"}
)
PERCENT_KPIS = frozenset({"win_rate", "quota_attainment", "conversion"})
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def kpi_kind(kpi: str) -> str:
    """ "money", "percent", "decimal" (days, durations in days) or "count"."""
    if kpi in MONEY_KPIS or kpi.endswith("revenue"):
        return "money"
    if kpi in PERCENT_KPIS or kpi.endswith("_rate"):
        return "percent"
    if kpi.endswith("days") or kpi.endswith("days_in_stage"):
        return "decimal"
    return "count"


def _whole(value: Decimal) -> str:
    return f"{value.quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


def format_percent(ratio: Decimal) -> str:
    """A ratio as a whole percentage; "<1%" for a small positive one, so nothing reads as zero that is not."""
    percent = ratio * 100
    if 0 < percent < 1:
        return "<1%"
    return f"{_whole(percent)}%"


def format_kpi_value(kpi: str, value: Decimal | None, currency: str, *, compare: str = "value") -> str:
    """``value`` of ``kpi`` in words: "14%", "$12,501", "2,019", "3.2"; "none" when undefined.

    ``compare`` is the rule's: a "change_pct" is a relative change (a percentage whatever the KPI);
    a "change" is in the KPI's own unit.
    """
    if value is None:
        return "none"
    kind = "percent" if compare == "change_pct" else kpi_kind(kpi)
    if kind == "percent":
        return format_percent(value)
    if kind == "money":
        amount = _whole(abs(value))
        sign = "-" if value < 0 else ""
        symbol = CURRENCY_SYMBOLS.get(currency)
        return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"
    if kind == "decimal":
        return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):,}"
    return _whole(value)
