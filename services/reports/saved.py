"""Saved reports in Redis, beside the shipped presets: who sees which, and who may change them.

A saved report belongs to the token that saved it (its ``token_id``); admins and its owner see and
change it, and the roles in ``shared_with`` see it. Seeing a report never widens what its reader may
read: running it still checks its scope against the reader's access, like every KPI route.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from redis.asyncio import Redis

from services.auth import Principal, Role
from services.reports.presets import PRESETS
from services.schemas.reports import ReportDraft, SavedReport
from services.topics import RedisKeys


class ReportAccessError(PermissionError):
    """The caller may not change (or see) the report; the message says why."""


def owner_of(principal: Principal) -> str:
    """The owner id a principal saves under: its token id, or its name when auth is off."""
    return principal.token_id or principal.name


def sees(principal: Principal, report: SavedReport) -> bool:
    """Whether the report is listed for the principal."""
    return (
        principal.role is Role.ADMIN
        or report.owner == owner_of(principal)
        or principal.role in report.shared_with
    )


def change_denial(principal: Principal, report: SavedReport) -> str | None:
    """Why the principal may not overwrite or delete the report; None if it may."""
    if report.preset:
        return f"{report.id!r} is a preset shipped with CRM Pulse; save a copy under another id"
    if principal.role is Role.ADMIN or report.owner == owner_of(principal):
        return None
    return f"{report.id!r} belongs to {report.owner_name or report.owner!r}; only its owner or an admin changes it"


class SavedReports:
    """The presets and the reports saved in Redis."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.key = keys.saved_reports

    async def get(self, report_id: str) -> SavedReport | None:
        if report_id in PRESETS:
            return PRESETS[report_id]
        raw = await self.redis.hget(self.key, report_id)
        return SavedReport.model_validate_json(raw) if raw is not None else None

    async def all(self) -> list[SavedReport]:
        """Presets first (in their order), then saved reports by id."""
        stored = await self.redis.hgetall(self.key)
        saved = sorted((SavedReport.model_validate_json(raw) for raw in stored.values()), key=lambda r: r.id)
        return [*PRESETS.values(), *saved]

    async def visible(self, principal: Principal) -> list[SavedReport]:
        return [report for report in await self.all() if sees(principal, report)]

    async def put(self, principal: Principal, report_id: str, draft: ReportDraft, now: datetime) -> SavedReport:
        """Save (create or overwrite) a report owned by the caller; ``ReportAccessError`` if it may not."""
        existing = await self.get(report_id)
        if existing is not None and (denial := change_denial(principal, existing)) is not None:
            raise ReportAccessError(denial)
        owner, owner_name = (
            (existing.owner, existing.owner_name) if existing is not None else (owner_of(principal), principal.name)
        )
        report = SavedReport(
            id=report_id,
            spec=draft.spec,
            description=draft.description,
            owner=owner,
            owner_name=owner_name,
            shared_with=_unique(draft.shared_with),
            updated_at=now,
        )
        await self.redis.hset(self.key, report_id, report.model_dump_json())
        return report

    async def delete(self, principal: Principal, report_id: str) -> bool:
        """Delete a saved report; False if there is none; ``ReportAccessError`` if the caller may not."""
        existing = await self.get(report_id)
        if existing is None:
            return False
        if (denial := change_denial(principal, existing)) is not None:
            raise ReportAccessError(denial)
        return bool(await self.redis.hdel(self.key, report_id))


def _unique(roles: Iterable[Role]) -> tuple[Role, ...]:
    return tuple(dict.fromkeys(roles))
