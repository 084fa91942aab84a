"""The events behind a KPI cell (``services.archive.drilldown``) as a ``Table``, for the exports."""

from __future__ import annotations

from collections.abc import Sequence

from services.archive.drilldown import DrilldownRow
from services.reports.table import Column, ColumnKind, Table

_T, _M = ColumnKind.TEXT, ColumnKind.MONEY
COLUMNS = (
    Column(key="occurred_at", label="When", kind=ColumnKind.DATETIME),
    Column(key="type", label="Event", kind=_T),
    Column(key="event_id", label="Event id", kind=_T),
    Column(key="manager_id", label="Manager", kind=_T),
    Column(key="team_id", label="Team", kind=_T),
    Column(key="deal_id", label="Deal", kind=_T),
    Column(key="customer_id", label="Customer", kind=_T),
    Column(key="stage", label="Stage", kind=_T),
    Column(key="lead_source", label="Source", kind=_T),
    Column(key="lost_reason", label="Lost reason", kind=_T),
    Column(key="amount", label="Amount", kind=_M),
    Column(key="revenue", label="Revenue at win", kind=_M),
    Column(key="duration_s", label="Duration", kind=ColumnKind.SECONDS),
    Column(key="cycle_days", label="Cycle (days)", kind=ColumnKind.DAYS),
)
"""The drill-down's columns, in the order the drill-down panel shows them."""


def drilldown_table(*, title: str, subtitle: str, currency: str, rows: Sequence[DrilldownRow]) -> Table:
    """One table row per event, values exact as the archive holds them; no chart, no totals."""
    keys = [column.key for column in COLUMNS]
    return Table(
        title=title,
        subtitle=subtitle,
        currency=currency,
        columns=COLUMNS,
        rows=tuple({key: getattr(row, key) for key in keys} for row in rows),
    )
