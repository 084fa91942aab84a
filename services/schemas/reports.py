"""Reports as data: what to read (scope, period, comparison, grouping, KPIs, filters) and saved reports.

A ``ReportSpec`` says nothing about how it is read: ``services.reports.planner`` turns it into KPI
reads of the same state the screen reads, and ``services.reports.assemble`` into a table.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.auth import Role
from services.kpis.periods import Period, PeriodKind, parse_period
from services.reports.table import ColumnKind
from services.topics import COMPANY_ID, ScopeKind, scope_token


class GroupBy(StrEnum):
    """What the rows of a report are."""

    NONE = "none"
    MANAGER = "manager"
    TEAM = "team"
    STAGE = "stage"
    LEAD_SOURCE = "lead_source"
    LOST_REASON = "lost_reason"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


TIME_GROUPS = frozenset({GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH})
KEYED_GROUPS = frozenset({GroupBy.STAGE, GroupBy.LEAD_SOURCE, GroupBy.LOST_REASON})


class KpiFamily(StrEnum):
    """Where a KPI's value comes from, which decides the groupings it fits."""

    PERIOD = "period"
    """A KPI of the scope over the period (CONTRACT section 3): any grouping but the keyed ones."""
    PIPELINE = "pipeline"
    """The open pipeline now (current state, not a period): no time grouping."""
    STAGE = "stage"
    SOURCE = "source"
    REASON = "reason"


class CatalogueKpi(BaseModel):
    """One KPI a report may show."""

    model_config = ConfigDict(frozen=True)

    name: str
    label: str
    kind: ColumnKind
    family: KpiFamily
    description: str


def _kpi(name: str, label: str, kind: ColumnKind, family: KpiFamily, description: str) -> CatalogueKpi:
    return CatalogueKpi(name=name, label=label, kind=kind, family=family, description=description)


_P, _C, _M, _R = KpiFamily.PERIOD, ColumnKind.COUNT, ColumnKind.MONEY, ColumnKind.RATIO
CATALOGUE: dict[str, CatalogueKpi] = {
    kpi.name: kpi
    for kpi in (
        _kpi("calls", "Calls", _C, _P, "call events"),
        _kpi("meetings", "Meetings", _C, _P, "meeting events"),
        _kpi("proposals", "Proposals", _C, _P, "proposal_sent events"),
        _kpi("call_duration_s", "Call time", ColumnKind.SECONDS, _P, "sum of duration_s over calls"),
        _kpi("deals_created", "Deals created", _C, _P, "deal_created events"),
        _kpi("deals_won", "Deals won", _C, _P, "deal_won events"),
        _kpi("deals_lost", "Deals lost", _C, _P, "deal_lost events"),
        _kpi("revenue", "Revenue", _M, _P, "amount of the deals won"),
        _kpi("avg_deal_size", "Avg deal size", _M, _P, "revenue / deals_won"),
        _kpi("win_rate", "Win rate", _R, _P, "deals_won / (deals_won + deals_lost)"),
        _kpi("avg_cycle_days", "Avg cycle", ColumnKind.DAYS, _P, "mean days from deal_created to deal_won"),
        _kpi("repeat_deals", "Repeat deals", _C, _P, "wins of customers with an earlier win"),
        _kpi("repeat_revenue", "Repeat revenue", _M, _P, "revenue of those wins"),
        _kpi("new_customers", "New customers", _C, _P, "customers whose first win falls in the period"),
        _kpi("quota", "Quota", _M, _P, "month periods: the scope's quota"),
        _kpi("quota_attainment", "Attainment", _R, _P, "revenue / quota"),
        _kpi("open_deals", "Open deals", _C, KpiFamily.PIPELINE, "open deals now"),
        _kpi("pipeline_amount", "Pipeline", _M, KpiFamily.PIPELINE, "amount of the open deals now"),
        _kpi("weighted_pipeline", "Weighted pipeline", _M, KpiFamily.PIPELINE, "sum of amount * stage probability"),
        _kpi("forecast", "Forecast", _M, KpiFamily.PIPELINE, "the period's revenue + the weighted pipeline"),
        _kpi("stage_entries", "Entries", _C, KpiFamily.STAGE, "events entering the stage"),
        _kpi("conversion_to_next", "Conversion to next", _R, KpiFamily.STAGE, "entries of the next stage / entries"),
        _kpi("drop_off", "Drop-off", _R, KpiFamily.STAGE, "1 - conversion to next"),
        _kpi("source_deals_created", "Deals created", _C, KpiFamily.SOURCE, "deals created from the source"),
        _kpi("source_deals_won", "Deals won", _C, KpiFamily.SOURCE, "deals of the source won"),
        _kpi("source_revenue", "Revenue", _M, KpiFamily.SOURCE, "revenue of the source's deals won"),
        _kpi("source_win_share", "Won / created", _R, KpiFamily.SOURCE, "deals won / deals created of the source"),
        _kpi("lost_deals", "Deals lost", _C, KpiFamily.REASON, "deal_lost events with the reason"),
        _kpi("lost_share", "Share of losses", _R, KpiFamily.REASON, "the reason's losses / all losses"),
    )
}
"""Every KPI a report may name, in the order a catalogue lists them."""

GROUP_FAMILIES: dict[KpiFamily, frozenset[GroupBy]] = {
    KpiFamily.PERIOD: frozenset(GroupBy) - KEYED_GROUPS,
    KpiFamily.PIPELINE: frozenset({GroupBy.NONE, GroupBy.MANAGER, GroupBy.TEAM, GroupBy.STAGE}),
    KpiFamily.STAGE: frozenset({GroupBy.STAGE}),
    KpiFamily.SOURCE: frozenset({GroupBy.LEAD_SOURCE}),
    KpiFamily.REASON: frozenset({GroupBy.LOST_REASON}),
}
"""The groupings each family of KPIs can be shown under."""


def check_kpis(group_by: GroupBy, kpis: tuple[str, ...]) -> None:
    """Raise ValueError naming each KPI that is unknown or does not fit the grouping."""
    unknown = [name for name in kpis if name not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown KPI {unknown}; GET /api/v1/reports/catalogue lists them: {list(CATALOGUE)}")
    misfits = [name for name in kpis if group_by not in GROUP_FAMILIES[CATALOGUE[name].family]]
    if misfits:
        fitting = [name for name, kpi in CATALOGUE.items() if group_by in GROUP_FAMILIES[kpi.family]]
        raise ValueError(f"{misfits} cannot be grouped by {group_by.value}; KPIs that can: {fitting}")


class Comparison(StrEnum):
    """What each figure is compared with."""

    NONE = "none"
    PREVIOUS_PERIOD = "previous_period"
    SAME_PERIOD_LAST_YEAR = "same_period_last_year"


class ReportScope(BaseModel):
    """The company, a team or a manager (whose events the report counts)."""

    model_config = ConfigDict(frozen=True)

    kind: ScopeKind = "company"
    id: str = Field(COMPANY_ID, min_length=1, max_length=128, description="team_id or manager_id; 'all' for company")

    @model_validator(mode="after")
    def _company_id(self) -> ReportScope:
        if self.kind == "company" and self.id != COMPANY_ID:
            raise ValueError(f"the company scope has id {COMPANY_ID!r}, not {self.id!r}")
        return self

    @property
    def token(self) -> str:
        return scope_token(self.kind, self.id)


class ReportPeriod(BaseModel):
    """A calendar period: a label of a kind, or the period containing today (``offset`` periods back)."""

    model_config = ConfigDict(frozen=True)

    kind: PeriodKind = PeriodKind.MONTH
    at: str | None = Field(
        None,
        description="label as in the KPI routes (2026-11-27, 2026-W48, 2026-11, 2026-Q4, 2026, FROM..TO with TO "
        "exclusive); null: the period containing today",
        examples=["2026-11"],
    )
    offset: int = Field(0, ge=0, le=120, description="without `at`: this many periods before the current one")

    @model_validator(mode="after")
    def _label_fits(self) -> ReportPeriod:
        if self.kind is PeriodKind.RANGE and not self.at:
            raise ValueError("a range period needs at=FROM..TO (ISO dates, TO exclusive)")
        if self.at is not None and self.offset:
            raise ValueError("offset counts back from the current period: give either at or offset")
        if self.at is not None:
            parse_period(self.kind, self.at, today=date(2000, 1, 1))  # raises ValueError with the reason
        return self

    def resolve(self, today: date) -> Period:
        """The period this names, with ``today`` the local date in the business time zone."""
        period = parse_period(self.kind, self.at, today=today)
        for _ in range(self.offset):
            period = period.previous()
        return period


class ReportFilters(BaseModel):
    """Keep only some rows: each list, when given, is the rows' keys to keep."""

    model_config = ConfigDict(frozen=True)

    managers: tuple[str, ...] | None = Field(None, description="group by manager: only these managers")
    teams: tuple[str, ...] | None = Field(None, description="group by team: only these teams")
    stages: tuple[str, ...] | None = Field(None, description="group by stage: only these stages")
    lead_sources: tuple[str, ...] | None = Field(None, description="group by lead source: only these sources")
    lost_reasons: tuple[str, ...] | None = Field(None, description="group by lost reason: only these reasons")

    def keeps(self, group_by: GroupBy, key: str) -> bool:
        wanted = {
            GroupBy.MANAGER: self.managers,
            GroupBy.TEAM: self.teams,
            GroupBy.STAGE: self.stages,
            GroupBy.LEAD_SOURCE: self.lead_sources,
            GroupBy.LOST_REASON: self.lost_reasons,
        }.get(group_by)
        return wanted is None or key in wanted


class ReportSpec(BaseModel):
    """One report: which scope and period, compared with what, grouped by what, which KPIs."""

    model_config = ConfigDict(frozen=True)

    title: str = Field("Report", min_length=1, max_length=200)
    scope: ReportScope = ReportScope()
    period: ReportPeriod = ReportPeriod()
    comparison: Comparison = Comparison.NONE
    group_by: GroupBy = GroupBy.NONE
    kpis: tuple[str, ...] = Field(
        ("deals_won", "revenue"), min_length=1, max_length=30, description="KPI names of GET /api/v1/reports/catalogue"
    )
    filters: ReportFilters = ReportFilters()
    sort: str | None = Field(None, description="a KPI of `kpis` to sort rows by, highest first; default: key order")
    chart: Literal["bar", "line", "none"] | None = Field(None, description="default: line for time groups, else bar")

    @model_validator(mode="after")
    def _kpis_fit(self) -> ReportSpec:
        check_kpis(self.group_by, self.kpis)
        if len(set(self.kpis)) != len(self.kpis):
            raise ValueError(f"kpis lists a KPI twice: {list(self.kpis)}")
        if self.sort is not None and self.sort not in self.kpis:
            raise ValueError(f"sort {self.sort!r} is not one of the report's kpis {list(self.kpis)}")
        if self.group_by is GroupBy.TEAM and self.scope.kind != "company":
            raise ValueError("group_by team needs the company scope: a team or manager has no teams below it")
        return self


class SavedReport(BaseModel):
    """A report kept under an id, with its owner and the roles it is shared with."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    spec: ReportSpec
    description: str = Field("", max_length=2000)
    owner: str = Field("", description="the token id (or name) of who saved it; 'crm-pulse' for presets")
    owner_name: str = ""
    shared_with: tuple[Role, ...] = Field(
        (), description="roles that see it besides its owner and admins; each still reads only the scopes it may"
    )
    preset: bool = Field(False, description="shipped with CRM Pulse; read-only")
    updated_at: datetime | None = None


class ReportDraft(BaseModel):
    """The body of PUT /api/v1/reports/{id}: what the caller sets (the owner is the caller)."""

    spec: ReportSpec
    description: str = Field("", max_length=2000)
    shared_with: tuple[Role, ...] = ()
