"""Drill-down: the archived events behind one KPI cell, paged and sorted, and the KPI's value from them.

A cell is a scope (``c``, ``t:<team>``, ``m:<manager>``), a time range (a calendar period's local
midnights or a rolling window's instants, [start, end)), a KPI of CONTRACT section 3 and, for the
breakdowns, its key (a stage, a lost reason, a lead source). The rows are the events that KPI counts,
selected by the contract's definition straight from the archive:

==========================  ================================================================
KPI                          rows (events in the range and the scope)
==========================  ================================================================
calls, call_duration_s       calls (the value of call_duration_s: the sum of their durations)
meetings, proposals          meetings, proposals
deals_created                deal_created
deals_won, revenue,          deal_won (revenue: the deal's amount at the win, from deal_history)
avg_deal_size
deals_lost                   deal_lost
win_rate                     deal_won and deal_lost
avg_cycle_days               deal_won of deals whose deal_created is known
stage_entries[s]             deal_created with initial stage s, deal_stage_changed to s
lost_by_reason[r]            deal_lost with lost_reason r
by_source.deals_created[src] deal_created of deals with lead source src (likewise deals_won, revenue)
repeat_deals, repeat_revenue deal_won whose customer had an earlier win (company-wide order)
new_customers                the first deal_won of each customer
quota_attainment             deal_won (its value: their revenue / the quota, given by the caller)
==========================  ================================================================

``value`` is computed from the rows with the same functions the KPI state is derived with
(``services.kpis.measures``), so it equals the number on the screen exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from services.kpis.measures import US_PER_DAY, money_ratio, ratio
from services.reports.table import Column, ColumnKind, Table
from services.schemas.events import amount_units, units_to_decimal

MAX_PAGE_SIZE = 500


class DrilldownKpi(StrEnum):
    """The KPIs a drill-down lists the events of."""

    CALLS = "calls"
    CALL_DURATION_S = "call_duration_s"
    MEETINGS = "meetings"
    PROPOSALS = "proposals"
    DEALS_CREATED = "deals_created"
    DEALS_WON = "deals_won"
    DEALS_LOST = "deals_lost"
    REVENUE = "revenue"
    AVG_DEAL_SIZE = "avg_deal_size"
    WIN_RATE = "win_rate"
    AVG_CYCLE_DAYS = "avg_cycle_days"
    STAGE_ENTRIES = "stage_entries"
    LOST_BY_REASON = "lost_by_reason"
    SOURCE_DEALS_CREATED = "by_source.deals_created"
    SOURCE_DEALS_WON = "by_source.deals_won"
    SOURCE_REVENUE = "by_source.revenue"
    REPEAT_DEALS = "repeat_deals"
    REPEAT_REVENUE = "repeat_revenue"
    NEW_CUSTOMERS = "new_customers"
    QUOTA_ATTAINMENT = "quota_attainment"


KEYED = frozenset(
    {
        DrilldownKpi.STAGE_ENTRIES,
        DrilldownKpi.LOST_BY_REASON,
        DrilldownKpi.SOURCE_DEALS_CREATED,
        DrilldownKpi.SOURCE_DEALS_WON,
        DrilldownKpi.SOURCE_REVENUE,
    }
)
"""The breakdowns: their cell names a key (stage, lost reason or lead source)."""
_WINS = frozenset(
    {
        DrilldownKpi.DEALS_WON,
        DrilldownKpi.REVENUE,
        DrilldownKpi.AVG_DEAL_SIZE,
        DrilldownKpi.AVG_CYCLE_DAYS,
        DrilldownKpi.SOURCE_DEALS_WON,
        DrilldownKpi.SOURCE_REVENUE,
        DrilldownKpi.QUOTA_ATTAINMENT,
    }
)
_CUSTOMER_RANKED = frozenset({DrilldownKpi.REPEAT_DEALS, DrilldownKpi.REPEAT_REVENUE, DrilldownKpi.NEW_CUSTOMERS})


class SortKey(StrEnum):
    OCCURRED_AT = "occurred_at"
    TYPE = "type"
    MANAGER_ID = "manager_id"
    TEAM_ID = "team_id"
    DEAL_ID = "deal_id"
    CUSTOMER_ID = "customer_id"
    AMOUNT = "amount"
    REVENUE = "revenue"
    DURATION_S = "duration_s"
    CYCLE_DAYS = "cycle_days"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class DrilldownError(ValueError):
    """A drill-down request that does not name a cell (a key missing or extra, a quota missing)."""


class DrilldownQuery(BaseModel):
    """One KPI cell and the page of its rows wanted."""

    model_config = ConfigDict(frozen=True)

    scope: str = Field(description="c, t:<team_id> or m:<manager_id>")
    kpi: DrilldownKpi
    key: str | None = Field(None, description="the stage, lost reason or lead source of a breakdown")
    start: datetime = Field(description="first instant counted (inclusive)")
    end: datetime = Field(description="first instant not counted (exclusive)")
    sort: SortKey = SortKey.OCCURRED_AT
    order: SortOrder = SortOrder.DESC
    page: int = Field(1, ge=1)
    page_size: int = Field(50, ge=1, le=MAX_PAGE_SIZE)
    quota: Decimal | None = Field(None, description="quota_attainment: the scope's quota for the month")

    def check(self) -> None:
        """Raise DrilldownError when the cell is incomplete."""
        if self.kpi in KEYED and not self.key:
            raise DrilldownError(f"{self.kpi} is a breakdown: give its key (a stage, lost reason or lead source)")
        if self.kpi not in KEYED and self.key is not None:
            raise DrilldownError(f"{self.kpi} has no breakdown: leave key out")
        if not (self.scope == "c" or (self.scope[:2] in ("t:", "m:") and len(self.scope) > 2)):
            raise DrilldownError(f"scope {self.scope!r} is not c, t:<team_id> or m:<manager_id>")


class DrilldownRow(BaseModel):
    """One event behind the number, with what its deal adds to it."""

    event_id: str
    type: str
    occurred_at: datetime
    manager_id: str
    team_id: str | None = None
    deal_id: str | None = None
    customer_id: str | None = Field(None, description="the event's, or for a deal event its deal's customer")
    amount: Decimal | None = Field(None, description="the amount the event carried")
    revenue: Decimal | None = Field(None, description="deal_won: the deal's amount at the win (what revenue counts)")
    stage: str | None = None
    lead_source: str | None = Field(None, description="deal events: the deal's lead source")
    lost_reason: str | None = None
    duration_s: int | None = None
    outcome: str | None = None
    cycle_days: Decimal | None = Field(None, description="deal_won: days since the deal's deal_created, if known")


class DrilldownResult(BaseModel):
    """The rows of one page, how many rows there are in all, and the KPI's value from all of them."""

    total_rows: int
    value: int | Decimal | None
    rows: list[DrilldownRow]


@dataclass(frozen=True)
class _Selection:
    """The FROM ... WHERE of the cell's rows, and its parameters."""

    query: sql.Composable
    params: dict[str, Any]


_BASE = """
    SELECT e.event_id, e.type, e.occurred_at, e.utc_offset_s, e.manager_id, e.team_id, e.deal_id,
           CASE WHEN e.type LIKE 'deal_%%' THEN d.customer_id ELSE e.customer_id END AS customer_id, e.amount,
           CASE WHEN e.type = 'deal_won' THEN COALESCE(h.amount, 0) END AS revenue,
           e.stage, CASE WHEN e.deal_id IS NOT NULL AND e.type LIKE 'deal_%%'
                         THEN COALESCE(d.lead_source, 'unknown') END AS lead_source,
           e.lost_reason, e.duration_s, e.outcome,
           CASE WHEN e.type = 'deal_won' AND d.created_at IS NOT NULL
                THEN EXTRACT(EPOCH FROM (e.occurred_at - d.created_at)) * 1000000 END AS cycle_us
    FROM events e
    LEFT JOIN deal_history h ON h.event_id = e.event_id
    LEFT JOIN deals d ON d.deal_id = e.deal_id AND e.type LIKE 'deal_%%'
    WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s
"""


def _selection(query: DrilldownQuery) -> _Selection:
    params: dict[str, Any] = {"start": query.start, "end": query.end, "key": query.key}
    where = [_BASE]
    if query.scope.startswith("m:"):
        where.append("AND e.manager_id = %(scope_id)s")
        params["scope_id"] = query.scope[2:]
    elif query.scope.startswith("t:"):
        where.append("AND e.team_id = %(scope_id)s")
        params["scope_id"] = query.scope[2:]
    kpi = query.kpi
    if kpi in (DrilldownKpi.CALLS, DrilldownKpi.CALL_DURATION_S):
        where.append("AND e.type = 'call'")
    elif kpi is DrilldownKpi.MEETINGS:
        where.append("AND e.type = 'meeting'")
    elif kpi is DrilldownKpi.PROPOSALS:
        where.append("AND e.type = 'proposal_sent'")
    elif kpi is DrilldownKpi.DEALS_CREATED:
        where.append("AND e.type = 'deal_created'")
    elif kpi is DrilldownKpi.DEALS_LOST:
        where.append("AND e.type = 'deal_lost'")
    elif kpi is DrilldownKpi.WIN_RATE:
        where.append("AND e.type IN ('deal_won', 'deal_lost')")
    elif kpi is DrilldownKpi.STAGE_ENTRIES:
        where.append("AND e.type IN ('deal_created', 'deal_stage_changed') AND e.stage = %(key)s")
    elif kpi is DrilldownKpi.LOST_BY_REASON:
        where.append("AND e.type = 'deal_lost' AND e.lost_reason = %(key)s")
    elif kpi is DrilldownKpi.SOURCE_DEALS_CREATED:
        where.append("AND e.type = 'deal_created' AND COALESCE(d.lead_source, 'unknown') = %(key)s")
    elif kpi in _WINS or kpi in _CUSTOMER_RANKED:
        where.append("AND e.type = 'deal_won'")
        if kpi is DrilldownKpi.AVG_CYCLE_DAYS:
            where.append("AND d.created_at IS NOT NULL")
        elif kpi in (DrilldownKpi.SOURCE_DEALS_WON, DrilldownKpi.SOURCE_REVENUE):
            where.append("AND COALESCE(d.lead_source, 'unknown') = %(key)s")
    else:  # pragma: no cover - every KPI is handled above
        raise DrilldownError(f"no drill-down for {kpi}")
    base: sql.Composable = sql.SQL(" ".join(where))
    if kpi in _CUSTOMER_RANKED:
        # A customer's wins ranked company-wide in (occurred_at, event_id) order: the first makes a new
        # customer, every later one a repeat deal. Only the customers of the cell's wins are ranked.
        nth = "= 1" if kpi is DrilldownKpi.NEW_CUSTOMERS else "> 1"
        base = sql.SQL(
            "WITH cell AS ({base}), ranked AS ("
            " SELECT h.event_id, row_number() OVER (PARTITION BY d.customer_id ORDER BY h.occurred_at, h.event_id)"
            " AS nth FROM deals d JOIN deal_history h ON h.deal_id = d.deal_id AND h.type = 'deal_won'"
            " WHERE d.customer_id IN (SELECT customer_id FROM cell WHERE customer_id IS NOT NULL))"
            " SELECT cell.* FROM cell JOIN ranked ON ranked.event_id = cell.event_id WHERE ranked.nth {nth}"
        ).format(base=base, nth=sql.SQL(nth))
    return _Selection(base, params)


def _value(query: DrilldownQuery, count: int, won: int, revenue: Decimal, duration: int, cycle_us: int) -> Any:
    """The KPI's value from the rows' aggregates, derived exactly as ``derive_kpis`` does."""
    kpi = query.kpi
    units = amount_units(revenue)
    if kpi is DrilldownKpi.CALL_DURATION_S:
        return duration
    if kpi in (DrilldownKpi.REVENUE, DrilldownKpi.SOURCE_REVENUE, DrilldownKpi.REPEAT_REVENUE):
        return units_to_decimal(units)
    if kpi is DrilldownKpi.AVG_DEAL_SIZE:
        return money_ratio(units, count)
    if kpi is DrilldownKpi.WIN_RATE:
        return ratio(won, count)
    if kpi is DrilldownKpi.AVG_CYCLE_DAYS:
        return ratio(cycle_us, count * US_PER_DAY)
    if kpi is DrilldownKpi.QUOTA_ATTAINMENT:
        return None if query.quota is None else ratio(units, amount_units(query.quota))
    return count


_ORDER_COLUMNS = {key: sql.Identifier(key.value) for key in SortKey}
_ORDER_COLUMNS[SortKey.CYCLE_DAYS] = sql.Identifier("cycle_us")


async def drilldown(connection: psycopg.AsyncConnection[Any], query: DrilldownQuery) -> DrilldownResult:
    """The cell's rows (one page), their number and the KPI's value from all of them."""
    query.check()
    selection = _selection(query)
    totals = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE type = 'deal_won'), COALESCE(sum(revenue), 0), "
        "COALESCE(sum(duration_s), 0), COALESCE(sum(cycle_us), 0) FROM ({rows}) AS cell"
    ).format(rows=selection.query)
    direction = sql.SQL("DESC" if query.order is SortOrder.DESC else "ASC")
    page = sql.SQL(
        "SELECT * FROM ({rows}) AS cell ORDER BY {column} {direction} NULLS LAST, event_id {direction} "
        "LIMIT %(limit)s OFFSET %(offset)s"
    ).format(rows=selection.query, column=_ORDER_COLUMNS[query.sort], direction=direction)
    params = {**selection.params, "limit": query.page_size, "offset": (query.page - 1) * query.page_size}
    async with connection.cursor() as cursor:
        await cursor.execute(totals, selection.params)
        aggregate = await cursor.fetchone()
        assert aggregate is not None
        count, won, revenue, duration, cycle_us = aggregate
        await cursor.execute(page, params)
        fetched = await cursor.fetchall()
    rows = [_row(values) for values in fetched]
    value = _value(query, int(count), int(won), Decimal(revenue), int(duration), int(cycle_us))
    return DrilldownResult(total_rows=int(count), value=value, rows=rows)


def _row(values: tuple[Any, ...]) -> DrilldownRow:
    (
        event_id,
        event_type,
        occurred_at,
        utc_offset_s,
        manager_id,
        team_id,
        deal_id,
        customer_id,
        amount,
        revenue,
        stage,
        lead_source,
        lost_reason,
        duration_s,
        outcome,
        cycle_us,
    ) = values
    local = occurred_at.astimezone(timezone(timedelta(seconds=utc_offset_s)) if utc_offset_s else UTC)
    return DrilldownRow(
        event_id=event_id,
        type=event_type,
        occurred_at=local,
        manager_id=manager_id,
        team_id=team_id,
        deal_id=deal_id,
        customer_id=customer_id,
        amount=amount,
        revenue=revenue,
        stage=stage,
        lead_source=lead_source,
        lost_reason=lost_reason,
        duration_s=duration_s,
        outcome=outcome,
        cycle_days=None if cycle_us is None else ratio(int(cycle_us), US_PER_DAY),
    )


_TABLE_COLUMNS = (
    Column(key="occurred_at", label="When", kind=ColumnKind.DATETIME),
    Column(key="type", label="Event"),
    Column(key="manager_id", label="Manager"),
    Column(key="team_id", label="Team"),
    Column(key="deal_id", label="Deal"),
    Column(key="customer_id", label="Customer"),
    Column(key="stage", label="Stage"),
    Column(key="lead_source", label="Lead source"),
    Column(key="lost_reason", label="Lost reason"),
    Column(key="amount", label="Amount", kind=ColumnKind.MONEY),
    Column(key="revenue", label="Revenue at win", kind=ColumnKind.MONEY),
    Column(key="duration_s", label="Duration", kind=ColumnKind.SECONDS),
    Column(key="cycle_days", label="Cycle (days)", kind=ColumnKind.DAYS),
    Column(key="event_id", label="Event id"),
)


def as_table(result: DrilldownResult, *, title: str, subtitle: str, currency: str) -> Table:
    """The rows as a report table (for the exporters), with the row count and the KPI's value as totals."""
    rows = tuple({column.key: getattr(row, column.key) for column in _TABLE_COLUMNS} for row in result.rows)
    totals: dict[str, Any] = {"occurred_at": None, "type": f"{result.total_rows} rows", "event_id": None}
    return Table(
        title=title,
        subtitle=subtitle,
        currency=currency,
        columns=_TABLE_COLUMNS,
        rows=rows,
        totals={**totals, "amount": None, "revenue": result.value if isinstance(result.value, Decimal) else None},
    )
