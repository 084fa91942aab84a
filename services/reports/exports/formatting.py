"""Cell values for people (the PDF, e-mail summaries): by the column's kind, from the exact value."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from services.reports.table import CellValue, ColumnKind

EMPTY = "\u2013"  # an en dash
"""What an undefined value (a ratio over nothing) reads as."""
CENT = Decimal("0.01")


def _grouped(value: Decimal, places: Decimal) -> str:
    return f"{value.quantize(places, rounding=ROUND_HALF_EVEN):,}"


def format_cell(value: CellValue, kind: ColumnKind) -> str:
    """``1,234.50`` for money, ``25.00 %`` for a ratio of 0.25, ``3.25`` days, ``1,200`` for counts."""
    if value is None:
        return EMPTY
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    number = Decimal(value)
    if kind is ColumnKind.RATIO:
        return f"{_grouped(number * 100, CENT)} %"
    if kind in (ColumnKind.MONEY, ColumnKind.DAYS):
        return _grouped(number, CENT)
    if kind in (ColumnKind.COUNT, ColumnKind.SECONDS):
        return _grouped(number, Decimal(1))
    return str(value)
