"""The result of a report or a drill-down as a table: columns with a kind, rows of exact values.

Values stay exact (``Decimal`` for money and ratios, ``int`` for counts); formatting by the column's
kind is the screen's and each exporter's job, never the producer's.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ColumnKind(StrEnum):
    """How a column's values are read and shown."""

    TEXT = "text"
    COUNT = "count"
    MONEY = "money"
    RATIO = "ratio"
    """A fraction (0.25 is shown as 25 %)."""
    DAYS = "days"
    SECONDS = "seconds"
    DATE = "date"
    DATETIME = "datetime"


CellValue = str | int | Decimal | date | datetime | None
"""One cell: ``None`` where the value is undefined (a ratio over nothing)."""


class Column(BaseModel):
    """One column: the key its cells are stored under, a label for people, and its kind."""

    model_config = ConfigDict(frozen=True)

    key: str
    label: str
    kind: ColumnKind = ColumnKind.TEXT


class Chart(BaseModel):
    """What to draw from the table: one series per ``y`` column against the ``x`` column."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(default="bar", pattern="^(bar|line)$")
    x: str
    y: tuple[str, ...]


class Table(BaseModel):
    """A titled table with an optional totals row and chart."""

    model_config = ConfigDict(frozen=True)

    title: str
    subtitle: str = ""
    """The period or range shown, and anything else a reader needs to know what the numbers cover."""
    currency: str = "USD"
    columns: tuple[Column, ...]
    rows: tuple[dict[str, CellValue], ...] = ()
    totals: dict[str, CellValue] | None = None
    chart: Chart | None = None
