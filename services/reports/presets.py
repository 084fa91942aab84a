"""The standard reports a sales director asks for, shipped as read-only saved reports.

Each is an ordinary spec: running one with another scope or period (the report routes' query
parameters) reads the same figures for that scope and period.
"""

from __future__ import annotations

from services.auth import Role
from services.kpis.periods import PeriodKind
from services.schemas.reports import GroupBy, ReportPeriod, ReportSpec, SavedReport

PRESET_OWNER = "crm-pulse"
EVERY_ROLE = tuple(Role)


def _preset(report_id: str, description: str, spec: ReportSpec) -> SavedReport:
    return SavedReport(
        id=report_id,
        spec=spec,
        description=description,
        owner=PRESET_OWNER,
        owner_name="CRM Pulse",
        shared_with=EVERY_ROLE,
        preset=True,
    )


PRESETS: dict[str, SavedReport] = {
    report.id: report
    for report in (
        _preset(
            "sales-funnel",
            "Entries per stage, conversion to the next stage and drop-off, this month.",
            ReportSpec(
                title="Sales funnel with drop-off",
                group_by=GroupBy.STAGE,
                kpis=("stage_entries", "conversion_to_next", "drop_off"),
            ),
        ),
        _preset(
            "plan-execution",
            "Each manager's revenue against their quota this month, best attainment first.",
            ReportSpec(
                title="Plan execution per manager",
                group_by=GroupBy.MANAGER,
                kpis=("quota_attainment", "revenue", "quota"),
                sort="quota_attainment",
            ),
        ),
        _preset(
            "manager-activity",
            "Calls, meetings, proposals and deals of each manager this month.",
            ReportSpec(
                title="Manager activity",
                group_by=GroupBy.MANAGER,
                kpis=("calls", "meetings", "proposals", "deals_created", "deals_won"),
                sort="calls",
            ),
        ),
        _preset(
            "lead-sources",
            "Deals created and won, revenue and win share per lead source this month.",
            ReportSpec(
                title="Lead-source effectiveness",
                group_by=GroupBy.LEAD_SOURCE,
                kpis=("source_deals_created", "source_deals_won", "source_win_share", "source_revenue"),
                sort="source_revenue",
            ),
        ),
        _preset(
            "lost-reasons",
            "Deals lost this month by reason, and each reason's share of the losses.",
            ReportSpec(
                title="Lost-deal reasons",
                group_by=GroupBy.LOST_REASON,
                kpis=("lost_deals", "lost_share"),
                sort="lost_deals",
            ),
        ),
        _preset(
            "sales-cycle",
            "Average days from deal created to deal won, month by month this year.",
            ReportSpec(
                title="Sales cycle length",
                period=ReportPeriod(kind=PeriodKind.YEAR),
                group_by=GroupBy.MONTH,
                kpis=("avg_cycle_days", "deals_won"),
            ),
        ),
        _preset(
            "pipeline-forecast",
            "Open deals and weighted pipeline now per stage; the total's forecast is this month's revenue plus "
            "the weighted pipeline.",
            ReportSpec(
                title="Pipeline forecast",
                group_by=GroupBy.STAGE,
                kpis=("open_deals", "pipeline_amount", "weighted_pipeline", "forecast"),
            ),
        ),
        _preset(
            "repeat-sales",
            "Wins from returning customers, their revenue, and new customers, month by month this year.",
            ReportSpec(
                title="Repeat sales",
                period=ReportPeriod(kind=PeriodKind.YEAR),
                group_by=GroupBy.MONTH,
                kpis=("repeat_deals", "repeat_revenue", "new_customers", "deals_won"),
            ),
        ),
    )
}
