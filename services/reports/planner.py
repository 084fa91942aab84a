"""Turning a report spec into KPI reads: which scope over which period, for each row (pure, no I/O).

Every row of a report is one scope over one period (a manager, a team, a sub-period of the
report's period, or the report's scope itself for keyed groupings), read exactly like the KPI
routes read it: the sum of the scope's stored buckets over the period, its month quota when the
period is a month, and its open pipeline where a pipeline KPI asks for it. So every figure of a
report equals the screen's for the same scope and period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from services.kpis.periods import Period, PeriodKind, day_range, period_of
from services.schemas.reports import (
    CATALOGUE,
    TIME_GROUPS,
    Comparison,
    GroupBy,
    KpiFamily,
    ReportScope,
    ReportSpec,
)
from services.topics import ScopeKind

MAX_ROWS = 1000
"""A report has at most this many rows (a day grouping: about three years)."""


class ReportPlanError(ValueError):
    """A spec that cannot be read as asked (too many rows, nothing to compare with)."""


@dataclass(frozen=True)
class Directory:
    """The scopes below the report's scope, as the worker has seen them (read before planning)."""

    managers: Sequence[str] = ()
    """The managers of the scope: every manager for the company, the team's for a team."""
    teams: Sequence[str] = ()


@dataclass(frozen=True)
class ScopeRead:
    """One scope over one period: the unit every figure of a report is derived from."""

    kind: ScopeKind
    scope_id: str
    period: Period

    @property
    def token(self) -> str:
        return ReportScope(kind=self.kind, id=self.scope_id).token

    @property
    def quota_month(self) -> str | None:
        """The month whose quota this read shows (month periods only, as in the KPI routes)."""
        return self.period.label if self.period.kind is PeriodKind.MONTH else None


@dataclass(frozen=True)
class RowPlan:
    """One row: its key (shown in the group column), the read behind it and the read compared with."""

    key: str
    read: ScopeRead
    compare: ScopeRead | None = None


@dataclass(frozen=True)
class ReportPlan:
    """What to read for a spec, and how the rows come out of it."""

    spec: ReportSpec
    period: Period
    compare_period: Period | None
    rows: tuple[RowPlan, ...]
    """The rows of scope or time groupings; keyed groupings derive theirs from ``totals``."""
    totals: RowPlan
    """The report's scope over the report's period (the totals row, and the keyed groupings' source)."""
    stages: tuple[str, ...] = ()
    needs_pipeline: bool = False
    pipeline_scopes: tuple[str, ...] = field(default=())

    def reads(self) -> list[ScopeRead]:
        """Every distinct read, in row order (one transaction reads them all)."""
        seen: dict[tuple[str, Period], ScopeRead] = {}
        for row in (*self.rows, self.totals):
            for read in (row.read, row.compare):
                if read is not None:
                    seen.setdefault((read.token, read.period), read)
        return list(seen.values())

    def quota_reads(self) -> list[tuple[ScopeKind, str, str]]:
        """(scope kind, id, month) of each read whose quota is shown."""
        wanted = {"quota", "quota_attainment"} & set(self.spec.kpis)
        if not wanted:
            return []
        found: dict[tuple[ScopeKind, str, str], None] = {}
        for read in self.reads():
            if read.quota_month is not None:
                found[(read.kind, read.scope_id, read.quota_month)] = None
        return list(found)


def same_period_last_year(period: Period) -> Period:
    """The period of the same kind a year before: the same day (28 Feb for 29 Feb), ISO week (52 for
    53), month, quarter or year; a range with both ends a year earlier."""

    def back(day: date) -> date:
        try:
            return day.replace(year=day.year - 1)
        except ValueError:  # 29 February
            return day.replace(year=day.year - 1, day=28)

    if period.kind is PeriodKind.WEEK:
        iso = period.start.isocalendar()
        try:
            start = date.fromisocalendar(iso.year - 1, iso.week, 1)
        except ValueError:  # week 53 in a year of 52
            start = date.fromisocalendar(iso.year - 1, 52, 1)
        return period_of(PeriodKind.WEEK, start)
    if period.kind is PeriodKind.RANGE:
        return day_range(back(period.start), back(period.end))
    return period_of(period.kind, back(period.start))


def compare_period_of(period: Period, comparison: Comparison) -> Period | None:
    if comparison is Comparison.PREVIOUS_PERIOD:
        return period.previous()
    if comparison is Comparison.SAME_PERIOD_LAST_YEAR:
        return same_period_last_year(period)
    return None


def split_period(period: Period, unit: GroupBy) -> list[Period]:
    """The days, ISO weeks or months of a period, cut at its bounds (a cut piece is a range period),
    so the pieces are disjoint and cover it exactly."""
    kind = {GroupBy.DAY: PeriodKind.DAY, GroupBy.WEEK: PeriodKind.WEEK, GroupBy.MONTH: PeriodKind.MONTH}[unit]
    pieces: list[Period] = []
    day = period.start
    while day < period.end:
        whole = period_of(kind, day)
        if whole.start >= period.start and whole.end <= period.end:
            pieces.append(whole)
        else:
            pieces.append(day_range(max(whole.start, period.start), min(whole.end, period.end)))
        day = whole.end
        if len(pieces) > MAX_ROWS:
            raise ReportPlanError(
                f"{period.label} has more than {MAX_ROWS} {unit.value}s: choose a shorter period or a coarser grouping"
            )
    return pieces


def piece_key(piece: Period, unit: GroupBy) -> str:
    """A time row's key: the label of the day, week or month it belongs to (also when cut)."""
    kind = {GroupBy.DAY: PeriodKind.DAY, GroupBy.WEEK: PeriodKind.WEEK, GroupBy.MONTH: PeriodKind.MONTH}[unit]
    return period_of(kind, piece.start).label


def plan_report(spec: ReportSpec, *, today: date, directory: Directory, stages: Sequence[str]) -> ReportPlan:
    """The reads of a report: ``today`` is the local date (business time zone), ``directory`` the
    scopes below the report's scope, ``stages`` the configured open stages in funnel order."""
    period = spec.period.resolve(today)
    compare_period = compare_period_of(period, spec.comparison)
    scope = spec.scope
    totals = RowPlan(
        key="total",
        read=ScopeRead(scope.kind, scope.id, period),
        compare=ScopeRead(scope.kind, scope.id, compare_period) if compare_period is not None else None,
    )
    rows: list[RowPlan] = []
    group = spec.group_by
    if group in (GroupBy.MANAGER, GroupBy.TEAM):
        kind: ScopeKind = "manager" if group is GroupBy.MANAGER else "team"
        if group is GroupBy.MANAGER and scope.kind == "manager":
            members: Sequence[str] = [scope.id]
        else:
            members = directory.managers if group is GroupBy.MANAGER else directory.teams
        for member in sorted(members):
            if not spec.filters.keeps(group, member):
                continue
            rows.append(
                RowPlan(
                    key=member,
                    read=ScopeRead(kind, member, period),
                    compare=ScopeRead(kind, member, compare_period) if compare_period is not None else None,
                )
            )
    elif group in TIME_GROUPS:
        pieces = split_period(period, group)
        compared = split_period(compare_period, group) if compare_period is not None else []
        for index, piece in enumerate(pieces):
            # The n-th day, week or month of the compared period: the one a reader sets beside it.
            other = compared[index] if index < len(compared) else None
            rows.append(
                RowPlan(
                    key=piece_key(piece, group),
                    read=ScopeRead(scope.kind, scope.id, piece),
                    compare=ScopeRead(scope.kind, scope.id, other) if other is not None else None,
                )
            )
    if len(rows) > MAX_ROWS:
        raise ReportPlanError(f"the report would have {len(rows)} rows, more than {MAX_ROWS}: add a filter")
    needs_pipeline = any(CATALOGUE[name].family is KpiFamily.PIPELINE for name in spec.kpis)
    pipeline_scopes: tuple[str, ...] = ()
    if needs_pipeline:
        pipeline_scopes = tuple(dict.fromkeys(row.read.token for row in (*rows, totals)))
    return ReportPlan(
        spec=spec,
        period=period,
        compare_period=compare_period,
        rows=tuple(rows),
        totals=totals,
        stages=tuple(stages),
        needs_pipeline=needs_pipeline,
        pipeline_scopes=pipeline_scopes,
    )


def period_text(period: Period) -> str:
    """A period for people: its label and its days (the end shown inclusive)."""
    last = period.end - timedelta(days=1)
    if period.start == last:
        return period.label
    return f"{period.label} ({period.start.isoformat()} to {last.isoformat()})"
