"""The wall-display page (static HTML, CSS and JavaScript; no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["display"])


@router.get("/", summary="Wall display", response_class=FileResponse)
async def read_wall_display() -> FileResponse:
    """The live wall display: company totals and today's leaderboard. ``?team=<team_id>``
    restricts it to one team."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
