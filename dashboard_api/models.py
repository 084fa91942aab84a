"""Response models of the REST API, and the small request bodies (events use the schema of services.schemas)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from services.kpi_reader import LeaderboardRow
from services.kpis.comparison import KpiChange
from services.kpis.funnel import FunnelValues
from services.kpis.measures import KpiValues, PipelineValues
from services.kpis.periods import Period, PeriodKind
from services.kpis.windows import Window, WindowLength
from services.topics import ScopeKind


class ScopeRef(BaseModel):
    """Whose figures these are: a manager, a team or the whole company."""

    kind: ScopeKind
    id: str = Field(description="manager or team id; 'all' for the company")
    token: str = Field(description="compact scope name used by the live feed: m:<id>, t:<id> or c")


class PeriodInfo(BaseModel):
    """A period of local calendar days [start, end) in the business time zone."""

    kind: PeriodKind
    label: str = Field(description="e.g. 2026-11-27, 2026-W48, 2026-11, 2026-Q4, 2026, 2026-11-01..2026-11-15")
    start: date = Field(description="first day (inclusive)")
    end: date = Field(description="day after the last day (exclusive)")

    @classmethod
    def of(cls, period: Period) -> PeriodInfo:
        return cls(kind=period.kind, label=period.label, start=period.start, end=period.end)


class PreviousPeriodKpis(BaseModel):
    """The KPIs of the period of the same kind just before."""

    label: str
    start: date
    end: date
    kpis: KpiValues


class KpiReport(BaseModel):
    """The KPIs of one scope over one period, with the previous period and the change."""

    scope: ScopeRef
    period: PeriodInfo
    currency: str = Field(description="reporting currency of every money amount")
    kpis: KpiValues
    previous: PreviousPeriodKpis
    change: dict[str, KpiChange] = Field(
        description="per numeric KPI: delta and percent change from the previous period"
    )


class WindowInfo(BaseModel):
    """A rolling window [start, end) of event time: ``length`` ending at ``as_of`` rounded down to the UTC minute."""

    length: WindowLength
    as_of: datetime = Field(description="the instant asked for (default: now)")
    start: datetime = Field(description="first instant counted (inclusive), UTC")
    end: datetime = Field(description="as_of rounded down to the whole UTC minute: first instant not counted")

    @classmethod
    def of(cls, window: Window, as_of: datetime) -> WindowInfo:
        return cls(length=window.length, as_of=as_of, start=window.start, end=window.end)


class PreviousWindowKpis(BaseModel):
    """The KPIs of the window of the same length just before."""

    start: datetime
    end: datetime
    kpis: KpiValues


class WindowKpiReport(BaseModel):
    """The KPIs of one scope over a rolling window, with the previous window and the change."""

    scope: ScopeRef
    window: WindowInfo
    currency: str = Field(description="reporting currency of every money amount")
    kpis: KpiValues
    previous: PreviousWindowKpis
    change: dict[str, KpiChange] = Field(
        description="per numeric KPI: delta and percent change from the previous window"
    )


class Leaderboard(BaseModel):
    """Managers ranked by one KPI over a period, best first."""

    period: PeriodInfo
    team_id: str | None = Field(description="the team the ranking is restricted to, if any")
    sort: str = Field(description="the KPI the rows are ranked by (descending; undefined values last)")
    currency: str
    rows: list[LeaderboardRow]


class PipelineReport(BaseModel):
    """The current open pipeline of a scope, and this month's forecast."""

    scope: ScopeRef
    currency: str
    pipeline: PipelineValues
    month: str = Field(description="the current month in the business time zone")
    month_revenue: Decimal = Field(description="revenue won so far this month")
    forecast: Decimal = Field(description="month_revenue + weighted_pipeline")


class FunnelReport(BaseModel):
    """The sales funnel of one scope over one period (docs/kpis.md, "Funnel")."""

    scope: ScopeRef
    period: PeriodInfo
    funnel: FunnelValues


class QuotaAmount(BaseModel):
    """The body of a quota change."""

    amount: StrictStr | StrictInt | StrictFloat = Field(
        description="the quota in the reporting currency: a decimal >= 0 with at most 4 decimal places, "
        "best sent as a string",
        examples=["12000.00"],
    )


class ManagerQuota(BaseModel):
    """A manager's quota for one local month."""

    manager_id: str
    month: str = Field(description="local month, YYYY-MM")
    amount: Decimal = Field(description="in the reporting currency")
    currency: str


class QuotaList(BaseModel):
    """Every quota set for one local month."""

    month: str
    currency: str
    quotas: list[ManagerQuota] = Field(description="by manager id")
    total: Decimal = Field(description="the sum of the quotas: the company's quota for the month")


class QuotaImport(BaseModel):
    """An accepted quota CSV."""

    imported: int = Field(description="quotas set (each line sets one; existing quotas of those keys are replaced)")
    months: list[str] = Field(description="the months the file touched")


class CsvProblemInfo(BaseModel):
    """Why one line of a quota CSV was refused."""

    line: int = Field(description="1-based line of the file (the header is line 1)")
    reason: str


class CsvRejection(BaseModel):
    """What was wrong with a quota CSV, line by line."""

    message: str
    problems: list[CsvProblemInfo]


class QuotaCsvRejected(BaseModel):
    """A quota CSV with bad lines: nothing of it was imported."""

    detail: CsvRejection


class ManagerList(BaseModel):
    """Every manager id the worker has seen."""

    managers: list[str]


class TeamInfo(BaseModel):
    """A team and the managers seen with it."""

    team_id: str
    managers: list[str] = Field(description="managers seen with an event carrying this team id")


class TeamList(BaseModel):
    """Every team id the worker has seen, with its managers."""

    teams: list[TeamInfo]


class Health(BaseModel):
    """Liveness: 200 while Redis answers; Kafka is informative (ingest needs it, reads do not)."""

    status: Literal["ok", "degraded"]
    redis: bool
    kafka: bool


class ErrorDetail(BaseModel):
    """A request that could not be served, and why."""

    detail: str
