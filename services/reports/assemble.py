"""From the measures a plan read to the report's table (pure): KPIs derived as the screen derives them.

Each row's KPIs come from ``derive_kpis`` of its read's measures (with the month quota, as the KPI
routes add it), the funnel's conversions from ``derive_funnel`` and the pipeline from
``derive_pipeline``: the functions the KPI, funnel and pipeline routes call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.kpis.comparison import kpi_change
from services.kpis.funnel import derive_funnel
from services.kpis.measures import KpiValues, Measures, PipelineValues, derive_kpis, derive_pipeline, ratio, with_quota
from services.kpis.periods import Period
from services.reports.planner import ReportPlan, RowPlan, ScopeRead, period_text
from services.reports.table import CellValue, Chart, Column, ColumnKind, Table
from services.schemas.reports import CATALOGUE, KEYED_GROUPS, TIME_GROUPS, Comparison, GroupBy, KpiFamily
from services.topics import ScopeKind

GROUP_LABELS = {
    GroupBy.NONE: "Scope",
    GroupBy.MANAGER: "Manager",
    GroupBy.TEAM: "Team",
    GroupBy.STAGE: "Stage",
    GroupBy.LEAD_SOURCE: "Lead source",
    GroupBy.LOST_REASON: "Lost reason",
    GroupBy.DAY: "Day",
    GroupBy.WEEK: "ISO week",
    GroupBy.MONTH: "Month",
}
KEY = "key"
"""The group column's key in every row."""


def compare_key(kpi: str) -> str:
    return f"compare:{kpi}"


def change_key(kpi: str) -> str:
    return f"change:{kpi}"


@dataclass(frozen=True)
class ReadState:
    """What the runner read for a plan: measures per (scope token, period), open pipelines per scope
    token, quotas (money units, None: no quota) per (scope kind, id, month)."""

    measures: Mapping[tuple[str, Period], Measures]
    current: Mapping[str, Measures]
    quotas: Mapping[tuple[ScopeKind, str, str], int | None]


def scope_text(kind: ScopeKind, scope_id: str) -> str:
    return "Company" if kind == "company" else f"{kind.capitalize()} {scope_id}"


class _Deriver:
    """KPIs, funnel and pipeline of the reads of one plan, each derived once."""

    def __init__(self, plan: ReportPlan, state: ReadState, probabilities: Mapping[str, Decimal]) -> None:
        self.plan = plan
        self.state = state
        self.probabilities = probabilities
        self._kpis: dict[tuple[str, Period], KpiValues] = {}

    def kpis(self, read: ScopeRead) -> KpiValues:
        key = (read.token, read.period)
        if key not in self._kpis:
            values = derive_kpis(self.state.measures.get(key, {}))
            month = read.quota_month
            if month is not None:
                values = with_quota(values, self.state.quotas.get((read.kind, read.scope_id, month)))
            self._kpis[key] = values
        return self._kpis[key]

    def pipeline(self, read: ScopeRead) -> PipelineValues:
        return derive_pipeline(self.state.current.get(read.token, {}), self.probabilities)

    def scalar(self, read: ScopeRead | None, kpi: str, *, live: bool) -> CellValue:
        """A period or pipeline KPI of one read; pipeline KPIs only for the current read (``live``)."""
        if read is None:
            return None
        family = CATALOGUE[kpi].family
        if family is KpiFamily.PERIOD:
            value: CellValue = getattr(self.kpis(read), kpi)
            return value
        if family is KpiFamily.PIPELINE and live:
            pipeline = self.pipeline(read)
            if kpi == "open_deals":
                return pipeline.open_deals
            if kpi == "pipeline_amount":
                return pipeline.amount
            if kpi == "weighted_pipeline":
                return pipeline.weighted_pipeline
            return self.kpis(read).revenue + pipeline.weighted_pipeline
        return None


def _with_comparison(
    values: dict[str, CellValue], compared: dict[str, CellValue] | None, kpis: tuple[str, ...]
) -> None:
    if compared is None:
        return
    for kpi in kpis:
        other = compared.get(kpi)
        values[compare_key(kpi)] = other
        current = values.get(kpi)
        numbers = (int, Decimal)
        both = isinstance(current, numbers) and isinstance(other, numbers)
        values[change_key(kpi)] = kpi_change(current, other).delta if both else None  # type: ignore[arg-type]


def _scope_row(deriver: _Deriver, row: RowPlan, kpis: tuple[str, ...], comparing: bool) -> dict[str, CellValue]:
    values: dict[str, CellValue] = {KEY: row.key}
    values.update({kpi: deriver.scalar(row.read, kpi, live=True) for kpi in kpis})
    if comparing:
        _with_comparison(values, {kpi: deriver.scalar(row.compare, kpi, live=False) for kpi in kpis}, kpis)
    return values


def _keyed_values(
    deriver: _Deriver, read: ScopeRead | None, group: GroupBy, live: bool
) -> dict[str, dict[str, CellValue]]:
    """The values per key of a keyed grouping (stage, lead source, lost reason) of one read."""
    if read is None:
        return {}
    kpis = deriver.kpis(read)
    out: dict[str, dict[str, CellValue]] = {}
    if group is GroupBy.STAGE:
        funnel = derive_funnel(kpis, deriver.plan.stages)
        pipeline = deriver.pipeline(read) if live else None
        for stage in funnel.stages:
            values: dict[str, CellValue] = {
                "stage_entries": stage.entries,
                "conversion_to_next": stage.conversion_to_next,
                "drop_off": stage.drop_off,
            }
            if pipeline is not None:
                of_stage = pipeline.stages.get(stage.stage)
                values["open_deals"] = of_stage.open_deals if of_stage else 0
                values["pipeline_amount"] = of_stage.amount if of_stage else Decimal(0)
                values["weighted_pipeline"] = of_stage.weighted if of_stage else Decimal(0)
            out[stage.stage] = values
    elif group is GroupBy.LEAD_SOURCE:
        for source, figures in kpis.by_source.items():
            out[source] = {
                "source_deals_created": figures.deals_created,
                "source_deals_won": figures.deals_won,
                "source_revenue": figures.revenue,
                "source_win_share": figures.win_share,
            }
    else:
        for reason, lost in sorted(kpis.lost_by_reason.items()):
            out[reason] = {"lost_deals": lost, "lost_share": ratio(lost, kpis.deals_lost)}
    return out


def _keyed_totals(deriver: _Deriver, read: ScopeRead | None, group: GroupBy, live: bool) -> dict[str, CellValue]:
    if read is None:
        return {}
    kpis = deriver.kpis(read)
    if group is GroupBy.STAGE:
        if not live:
            return {}
        pipeline = deriver.pipeline(read)
        return {
            "open_deals": pipeline.open_deals,
            "pipeline_amount": pipeline.amount,
            "weighted_pipeline": pipeline.weighted_pipeline,
            "forecast": kpis.revenue + pipeline.weighted_pipeline,
        }
    if group is GroupBy.LEAD_SOURCE:
        created = sum(source.deals_created for source in kpis.by_source.values())
        won = sum(source.deals_won for source in kpis.by_source.values())
        return {
            "source_deals_created": created,
            "source_deals_won": won,
            "source_revenue": sum((source.revenue for source in kpis.by_source.values()), Decimal(0)),
            "source_win_share": ratio(won, created),
        }
    lost = sum(kpis.lost_by_reason.values())
    return {"lost_deals": lost, "lost_share": ratio(lost, kpis.deals_lost)}


def _sort_rows(rows: list[dict[str, CellValue]], kpi: str | None) -> list[dict[str, CellValue]]:
    if kpi is None:
        return rows

    def rank(row: dict[str, CellValue]) -> tuple[bool, Decimal]:
        value = row.get(kpi)
        return (isinstance(value, int | Decimal), Decimal(value) if isinstance(value, int | Decimal) else Decimal(0))

    return sorted(rows, key=rank, reverse=True)


def columns_of(plan: ReportPlan) -> tuple[Column, ...]:
    spec = plan.spec
    group_kind = ColumnKind.TEXT
    columns = [Column(key=KEY, label=GROUP_LABELS[spec.group_by], kind=group_kind)]
    comparing = plan.compare_period is not None
    word = "prev." if spec.comparison is Comparison.PREVIOUS_PERIOD else "last year"
    for kpi in spec.kpis:
        entry = CATALOGUE[kpi]
        columns.append(Column(key=kpi, label=entry.label, kind=entry.kind))
        if comparing:
            columns.append(Column(key=compare_key(kpi), label=f"{entry.label} ({word})", kind=entry.kind))
            columns.append(Column(key=change_key(kpi), label=f"{entry.label} Δ", kind=entry.kind))
    return tuple(columns)


def build_table(plan: ReportPlan, state: ReadState, *, probabilities: Mapping[str, Decimal], currency: str) -> Table:
    """The report's table: one row per key of its grouping, and the totals row of its scope."""
    spec = plan.spec
    group = spec.group_by
    kpis = spec.kpis
    comparing = plan.compare_period is not None
    deriver = _Deriver(plan, state, probabilities)
    totals_plan = plan.totals
    rows: list[dict[str, CellValue]]
    totals: dict[str, CellValue] | None
    if group in KEYED_GROUPS:
        current = _keyed_values(deriver, totals_plan.read, group, live=True)
        compared = _keyed_values(deriver, totals_plan.compare, group, live=False)
        keys = list(current) + [key for key in compared if key not in current]
        rows = []
        for key in keys:
            if not spec.filters.keeps(group, key):
                continue
            values: dict[str, CellValue] = {KEY: key}
            values.update({kpi: current.get(key, {}).get(kpi) for kpi in kpis})
            if comparing:
                _with_comparison(values, {kpi: compared.get(key, {}).get(kpi) for kpi in kpis}, kpis)
            rows.append(values)
        totals = {KEY: "Total"}
        totals.update({kpi: _keyed_totals(deriver, totals_plan.read, group, True).get(kpi) for kpi in kpis})
        if comparing:
            other = _keyed_totals(deriver, totals_plan.compare, group, False)
            _with_comparison(totals, {kpi: other.get(kpi) for kpi in kpis}, kpis)
    elif group is GroupBy.NONE:
        single = RowPlan(
            key=scope_text(totals_plan.read.kind, totals_plan.read.scope_id),
            read=totals_plan.read,
            compare=totals_plan.compare,
        )
        rows = [_scope_row(deriver, single, kpis, comparing)]
        totals = None
    else:
        rows = [_scope_row(deriver, row, kpis, comparing) for row in plan.rows]
        totals = _scope_row(deriver, totals_plan, kpis, comparing)
        totals[KEY] = "Total" if group in TIME_GROUPS else scope_text(totals_plan.read.kind, totals_plan.read.scope_id)
    rows = _sort_rows(rows, spec.sort)
    subtitle = f"{scope_text(spec.scope.kind, spec.scope.id)} · {period_text(plan.period)}"
    if plan.compare_period is not None:
        subtitle += f" · compared with {period_text(plan.compare_period)}"
    chart_kind = spec.chart or ("line" if group in TIME_GROUPS else "bar")
    chart = None
    if chart_kind != "none" and group is not GroupBy.NONE:
        chart = Chart(kind=chart_kind, x=KEY, y=(kpis[0],))
    return Table(
        title=spec.title,
        subtitle=subtitle,
        currency=currency,
        columns=columns_of(plan),
        rows=tuple(rows),
        totals=totals,
        chart=chart,
    )
