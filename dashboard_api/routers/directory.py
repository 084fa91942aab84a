"""The managers and teams the worker has seen."""

from __future__ import annotations

from fastapi import APIRouter

from dashboard_api.auth import ScopeFilterDep
from dashboard_api.dependencies import KeysDep, RedisDep
from dashboard_api.models import ManagerList, TeamInfo, TeamList
from services.kpi_reader import list_managers, list_teams_with_managers

router = APIRouter(tags=["directory"])


@router.get("/managers", summary="Known managers")
async def read_managers(redis: RedisDep, keys: KeysDep, readable: ScopeFilterDep) -> ManagerList:
    """Every manager id an event was attributed to (that the caller may read), sorted."""
    managers = await list_managers(redis, keys)
    return ManagerList(managers=[manager for manager in managers if readable.allows(f"m:{manager}")])


@router.get("/teams", summary="Known teams")
async def read_teams(redis: RedisDep, keys: KeysDep, readable: ScopeFilterDep) -> TeamList:
    """Every team id carried by an event (that the caller may read), sorted, with the managers seen with it."""
    teams = await list_teams_with_managers(redis, keys)
    return TeamList(
        teams=[
            TeamInfo(team_id=team, managers=managers)
            for team, managers in teams.items()
            if readable.allows(f"t:{team}")
        ]
    )
