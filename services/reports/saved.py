"""Saved reports, beside the shipped presets: who sees which, who may change them, and where they live.

Like quotas and alert rules, every change goes first to a compacted Kafka topic (``Topics.reports``:
key the report id, value its JSON, a tombstone for a delete), the source of truth, then to the Redis
hash every read uses, applied only when newer than what Redis holds (``services.compacted_mirror``).
``restore_saved_reports`` (run by ``crm-pulse replay``) mirrors the topic into a Redis that lost them.

A saved report belongs to the token that saved it (its ``token_id``); admins and its owner see and
change it, and the roles in ``shared_with`` see it. Seeing a report never widens what its reader may
read: running it still checks its scope against the reader's access, like every KPI route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from redis.asyncio import Redis

from services.auth import Principal, Role
from services.compacted_mirror import MirroredChange, apply_newer
from services.kafka import LazyProducer, LogUnavailable, ensure_reports_topic, records_to_end, send_one
from services.reports.presets import PRESETS
from services.schemas.reports import ReportDraft, SavedReport
from services.settings import Settings
from services.topics import RedisKeys, Topics

log = logging.getLogger(__name__)


class ReportAccessError(PermissionError):
    """The caller may not change (or see) the report; the message says why."""


class ReportLogUnavailable(Exception):
    """Kafka did not take the change in time: nothing was written; retrying is harmless."""


def owner_of(principal: Principal) -> str:
    """The owner id a principal saves under: its token id, or its name when auth is off."""
    return principal.token_id or principal.name


def sees(principal: Principal, report: SavedReport) -> bool:
    """Whether the report is listed for the principal."""
    return principal.role is Role.ADMIN or report.owner == owner_of(principal) or principal.role in report.shared_with


def change_denial(principal: Principal, report: SavedReport) -> str | None:
    """Why the principal may not overwrite or delete the report; None if it may."""
    if report.preset:
        return f"{report.id!r} is a preset shipped with CRM Pulse; save a copy under another id"
    if principal.role is Role.ADMIN or report.owner == owner_of(principal):
        return None
    return f"{report.id!r} belongs to {report.owner_name or report.owner!r}; only its owner or an admin changes it"


async def apply_report_changes(redis: Redis, keys: RedisKeys, changes: Sequence[tuple[str, bytes | None, int]]) -> int:
    """Mirror (report id, JSON or None for a delete, topic offset) into Redis, newer changes only."""
    mirrored = [
        MirroredChange(report_id, keys.saved_reports, report_id, offset, value) for report_id, value, offset in changes
    ]
    return await apply_newer(redis, keys.saved_report_offsets, mirrored)


class SavedReports:
    """The presets and the saved reports: reads from Redis, changes through the reports topic."""

    def __init__(self, settings: Settings, redis: Redis, *, timeout_s: float | None = None) -> None:
        self._settings = settings
        self.redis = redis
        self.keys = RedisKeys.from_settings(settings)
        self._topic = Topics.from_settings(settings).reports
        self._timeout_s = timeout_s if timeout_s is not None else settings.api.kafka_timeout_s
        self._producer = LazyProducer(
            settings,
            before_start=lambda: ensure_reports_topic(settings),
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self._timeout_s * 1000),
            client_id="crm-pulse-reports",
        )

    async def close(self) -> None:
        await self._producer.close()

    async def get(self, report_id: str) -> SavedReport | None:
        if report_id in PRESETS:
            return PRESETS[report_id]
        raw = await self.redis.hget(self.keys.saved_reports, report_id)
        return SavedReport.model_validate_json(raw) if raw is not None else None

    async def all(self) -> list[SavedReport]:
        """Presets first (in their order), then saved reports by id."""
        stored = await self.redis.hgetall(self.keys.saved_reports)
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
        await self._write(report_id, report.model_dump_json().encode())
        return report

    async def delete(self, principal: Principal, report_id: str) -> bool:
        """Delete a saved report; False if there is none; ``ReportAccessError`` if the caller may not."""
        existing = await self.get(report_id)
        if existing is None:
            return False
        if (denial := change_denial(principal, existing)) is not None:
            raise ReportAccessError(denial)
        await self._write(report_id, None)
        return True

    async def _write(self, report_id: str, value: bytes | None) -> None:
        try:
            offset = await send_one(self._producer, self._topic, report_id.encode(), value, timeout_s=self._timeout_s)
        except LogUnavailable as exc:
            raise ReportLogUnavailable(
                f"Kafka at {self._settings.kafka.bootstrap_servers} {exc.problem}; report {report_id!r} was not "
                "written. Retry: writing the same report again is harmless"
            ) from None
        await apply_report_changes(self.redis, self.keys, [(report_id, value, offset)])


async def restore_saved_reports(settings: Settings, redis: Redis) -> int:
    """Mirror the reports topic into Redis (last record per id wins); how many saved reports it holds.

    Records that are not a saved report of their key's id are logged and skipped; a missing topic reads as empty.
    """
    topic = Topics.from_settings(settings).reports
    latest: dict[str, tuple[bytes | None, int]] = {}
    async for message in records_to_end(settings, topic):
        report_id = (message.key or b"").decode(errors="replace")
        try:
            if message.value is not None and SavedReport.model_validate_json(message.value).id != report_id:
                raise ValueError(f"the record's key {report_id!r} is not its report's id")
        except ValueError as exc:  # pydantic's ValidationError is one
            log.warning("skipping the saved report at %s offset %d: %s", topic, message.offset, exc)
            continue
        latest[report_id] = (message.value, message.offset)
    changes = [(report_id, value, offset) for report_id, (value, offset) in latest.items()]
    await apply_report_changes(redis, RedisKeys.from_settings(settings), changes)
    return sum(1 for value, _ in latest.values() if value is not None)


def _unique(roles: Iterable[Role]) -> tuple[Role, ...]:
    return tuple(dict.fromkeys(roles))
