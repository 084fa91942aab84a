"""The display pages (static HTML, CSS and JavaScript modules; no build step).

``/`` is the wall display (TV mode) of the company or a team; ``/me`` a manager's own numbers
with trend charts; ``/reports`` the report page. Both take ``?token=...`` and keep it for the browser tab.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["display"])

NO_CACHE = {"Cache-Control": "no-cache"}


@router.get("/", summary="Wall display", response_class=FileResponse)
async def read_wall_display() -> FileResponse:
    """The live wall display: leaderboard with plan attainment, funnel, today vs yesterday and month vs last
    month, alert ticker and clock. ``?scope=c`` (default) or ``?scope=t:<team_id>``; ``?view=leaderboard|funnel|
    compare`` or ``?playlist=leaderboard,funnel,compare&rotate=20`` (seconds); ``?manager=<id>`` opens ``/me``."""
    return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)


@router.get("/me", summary="Manager's own view", response_class=FileResponse)
async def read_manager_view() -> FileResponse:
    """A manager's numbers today and this month against the previous ones, plan attainment, and daily trend
    charts over the last 30 days: ``/me?manager=<manager_id>``."""
    return FileResponse(STATIC_DIR / "me.html", headers=NO_CACHE)


@router.get("/reports", summary="Report page", response_class=FileResponse)
async def read_report_page() -> FileResponse:
    """Presets and saved reports, run for a scope and period, as a chart and a table, with CSV, XLSX and PDF
    exports: ``/reports?report=<id>&scope=t:<team_id>&period=month&at=2026-11``."""
    return FileResponse(STATIC_DIR / "reports.html", headers=NO_CACHE)
