"""Reports: the KPI catalogue, the presets and saved reports, running one, and its exports (CSV, XLSX, PDF).

A report reads the same KPI state as the KPI, funnel and pipeline routes (``services.reports.runner``),
so its numbers are the screen's; an export is the same table written as a file
(``services.reports.exports``). Running a report checks its scope like the KPI routes: a manager runs
any report on their own numbers, a team lead on the team's, a director on everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from dashboard_api.auth import PrincipalDep, ScopeFilter, ScopeFilterDep, authorizer, readable_scopes
from dashboard_api.dependencies import KeysDep, NowDep, RedisDep, SettingsDep, TodayDep
from dashboard_api.exports import export_response
from dashboard_api.models import ErrorDetail
from services.auth import Role
from services.kpis.periods import PeriodKind
from services.reports.exports import ExportFormat, render
from services.reports.planner import ReportPlanError
from services.reports.runner import run_report
from services.reports.saved import ReportAccessError, ReportLogUnavailable, SavedReports, sees
from services.reports.table import Table
from services.schemas.reports import (
    CATALOGUE,
    GROUP_FAMILIES,
    CatalogueKpi,
    GroupBy,
    ReportDraft,
    ReportPeriod,
    ReportScope,
    ReportSpec,
    SavedReport,
)
from services.settings import Settings
from services.topics import RedisKeys, parse_scope_token

router = APIRouter(prefix="/reports", tags=["reports"])

ReportId = Annotated[str, Path(description="a preset's or saved report's id", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
FormatQuery = Annotated[
    ExportFormat | None,
    Query(alias="format", description="csv, xlsx or pdf for a file; none: the table as JSON"),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "no report has the id"}}
RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the table (JSON), or with ?format= the file",
        "content": {"text/csv": {}, "application/pdf": {}, "application/vnd.ms-excel": {}},
    },
    403: {"model": ErrorDetail, "description": "the caller may not read the report's scope"},
    422: {"model": ErrorDetail, "description": "the report cannot be read as asked (the reason is given)"},
}


@authorizer
async def report_writer(scopes: Annotated[ScopeFilter, Depends(readable_scopes)]) -> ScopeFilter:
    """Any caller but a display (a wall display's token is read-only; it sits in the display's URL)."""
    if scopes.principal.role is Role.DISPLAY:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"forbidden: {scopes.principal.describe()} is read-only and may not save or delete reports",
        )
    return scopes


WriterDep = Annotated[ScopeFilter, Depends(report_writer)]


def get_saved_reports(connection: HTTPConnection) -> SavedReports:
    reports: SavedReports = connection.app.state.saved_reports
    return reports


ReportsDep = Annotated[SavedReports, Depends(get_saved_reports)]
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorDetail, "description": "a preset, or another owner's report"}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorDetail, "description": "Kafka did not take the change; retry (it is harmless)"}
}


class Catalogue(BaseModel):
    """What a report may show, and under which groupings."""

    kpis: list[CatalogueKpi]
    groupings: dict[str, list[str]] = Field(description="each grouping and the KPIs that can be shown under it")


@router.get("/catalogue", summary="KPIs and groupings a report may use")
async def read_catalogue(_: ScopeFilterDep) -> Catalogue:
    """Every KPI of the catalogue with its kind, and for each grouping the KPIs that fit it."""
    groupings = {
        group.value: [name for name, kpi in CATALOGUE.items() if group in GROUP_FAMILIES[kpi.family]]
        for group in GroupBy
    }
    return Catalogue(kpis=list(CATALOGUE.values()), groupings=groupings)


@router.get("", summary="Presets and saved reports")
async def list_reports(principal: PrincipalDep, _: ScopeFilterDep, reports: ReportsDep) -> list[SavedReport]:
    """The presets and the saved reports the caller sees: its own, those shared with its role, all for admins."""
    return await reports.visible(principal)


@dataclass(frozen=True)
class ReportRunner:
    """What running a report needs: the caller's readable scopes and the KPI state of today."""

    scopes: ScopeFilter
    settings: Settings
    redis: Redis
    keys: RedisKeys
    today: date

    async def respond(self, spec: ReportSpec, export_format: ExportFormat | None) -> Table | Response:
        """The table as JSON or as a file; 403 when the caller may not read the spec's scope."""
        token = spec.scope.token
        if not self.scopes.allows(token):
            denial = self.scopes.principal.read_denial(token, self.scopes.roster)
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {denial}")
        try:
            table = await run_report(self.redis, self.keys, self.settings, spec, today=self.today)
        except ReportPlanError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
        if export_format is None:
            return table
        return export_response(render(table, export_format))


def get_runner(
    scopes: ScopeFilterDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep, today: TodayDep
) -> ReportRunner:
    return ReportRunner(scopes, settings, redis, keys, today)


RunnerDep = Annotated[ReportRunner, Depends(get_runner)]


@router.post("/run", summary="Run a report given in full", responses=RUN_RESPONSES, response_model=Table)
async def run_spec(
    spec: Annotated[ReportSpec, Body(description="the report: scope, period, comparison, grouping, KPIs, filters")],
    runner: RunnerDep,
    export_format: FormatQuery = None,
) -> Table | Response:
    """The report's table, or with ``?format=csv|xlsx|pdf`` its export, with the screen's numbers."""
    return await runner.respond(spec, export_format)


@router.get(
    "/{report_id}/run",
    summary="Run a preset or saved report",
    responses=RUN_RESPONSES | NOT_FOUND,
    response_model=Table,
)
async def run_saved(
    report_id: ReportId,
    runner: RunnerDep,
    reports: ReportsDep,
    export_format: FormatQuery = None,
    scope: Annotated[
        str | None,
        Query(description="run it for another scope: c, t:<team_id> or m:<manager_id>", pattern=r"^(c|[tm]:.+)$"),
    ] = None,
    period: Annotated[PeriodKind | None, Query(description="run it for another kind of period")] = None,
    at: Annotated[str | None, Query(description="the period's label (as in the KPI routes); default: current")] = None,
) -> Table | Response:
    """A preset or saved report the caller sees, optionally for another scope or period."""
    report = await _visible_report(reports, runner.scopes, report_id)
    changes: dict[str, Any] = {}
    try:
        if scope is not None:
            kind, scope_id = parse_scope_token(scope)
            changes["scope"] = ReportScope(kind=kind, id=scope_id).model_dump()
        if period is not None or at is not None:
            changes["period"] = ReportPeriod(kind=period or report.spec.period.kind, at=at).model_dump()
        spec = ReportSpec.model_validate(report.spec.model_dump() | changes)  # checked again as a whole
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=_reason(exc)) from None
    return await runner.respond(spec, export_format)


async def _visible_report(reports: SavedReports, scopes: ScopeFilter, report_id: str) -> SavedReport:
    """The report, or 404 when there is none or the caller does not see it (it may not learn which)."""
    report = await reports.get(report_id)
    if report is None or not sees(scopes.principal, report):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no report {report_id!r}; GET /api/v1/reports lists them"
        )
    return report


def _reason(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'report'}: {e['msg']}" for e in errors())
    return str(exc)


@router.get("/{report_id}", summary="One preset or saved report", responses=NOT_FOUND)
async def read_report(report_id: ReportId, scopes: ScopeFilterDep, reports: ReportsDep) -> SavedReport:
    """The report's spec, owner and sharing."""
    report = await _visible_report(reports, scopes, report_id)
    return report


@router.put(
    "/{report_id}",
    summary="Save a report",
    responses=NOT_YOURS | UNAVAILABLE,
)
async def save_report(
    report_id: ReportId,
    draft: ReportDraft,
    principal: PrincipalDep,
    scopes: WriterDep,
    reports: ReportsDep,
    now: NowDep,
) -> SavedReport:
    """Create or overwrite a report owned by the caller (an admin may overwrite any but the presets).

    The caller must read the report's scope; ``shared_with`` lists the roles that see it too.
    """
    if not scopes.allows(draft.spec.scope.token):
        denial = principal.read_denial(draft.spec.scope.token, scopes.roster)
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {denial}")
    try:
        return await reports.put(principal, report_id, draft, now)
    except ReportAccessError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {exc}") from None
    except ReportLogUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None


@router.delete(
    "/{report_id}",
    summary="Delete a saved report",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND | NOT_YOURS | UNAVAILABLE,
)
async def delete_report(report_id: ReportId, principal: PrincipalDep, _: WriterDep, reports: ReportsDep) -> Response:
    """Delete a report the caller owns (admins: any saved report)."""
    try:
        deleted = await reports.delete(principal, report_id)
    except ReportAccessError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {exc}") from None
    except ReportLogUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no saved report {report_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
