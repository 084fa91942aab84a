"""Alerting over HTTP: rules (create, read, update, delete), silences, acknowledgements, the
alerts pending or firing now, and the history of state changes and notifications.

Every caller reads the alerts (active and history) of the scopes it may read (docs/access.md);
rules and silences, which concern any scope, only those who read every scope.

The alerts worker (``python -m alerts.worker``) evaluates; this router only reads what it
keeps and writes what it reads at every evaluation tick (docs/alerts.md).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from dashboard_api.auth import ScopeFilterDep, require
from dashboard_api.dependencies import AlertConfigWriterDep, NowDep, RedisDep, SettingsDep
from dashboard_api.models import ErrorDetail
from services import alert_config
from services.auth import Action
from services.schemas.alerts import Acknowledgement, Rule, Silence
from services.topics import AlertNames

router = APIRouter(prefix="/alerts", tags=["alerts"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "no such item"}}
READ_RULES = Depends(require(Action.ALERT_RULES_READ))
WRITE_ALERTS = Depends(require(Action.ALERTS_WRITE))
RuleIdPath = Annotated[str, Path(min_length=1, max_length=128, description="the rule's id")]
_T = TypeVar("_T")


async def _written(change: Awaitable[_T]) -> _T:
    """A change through the alerting config topic; 503 when Kafka did not take it (nothing written)."""
    try:
        return await change
    except alert_config.AlertConfigUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


def _names(settings: SettingsDep) -> AlertNames:
    return AlertNames.from_settings(settings)


class RuleList(BaseModel):
    """The rules written over the API (rules of the YAML file are not listed here)."""

    rules: list[Rule]


class SilenceList(BaseModel):
    """Silences written over the API, expired ones included until deleted."""

    silences: list[Silence]


class ActiveAlerts(BaseModel):
    """Alerts pending or firing now, by fingerprint (as the alerts worker keeps them)."""

    alerts: dict[str, dict[str, Any]]


class History(BaseModel):
    """History entries, newest first; pass ``next_before`` as ``before`` for the next page."""

    entries: list[dict[str, Any]]
    next_before: str | None = Field(
        description="where this page stopped reading: the `before` of the next page; null when the history "
        "has no older entries. A page can hold fewer than `limit` entries and still have a next one: one "
        "request reads at most 20,000 entries of the history looking for those the caller may see."
    )


class AckRequest(BaseModel):
    """Who takes the firing alert, and why."""

    episode: Any = Field(description="the alert's starts_at (from /alerts/active), RFC 3339")
    by: str = Field("", max_length=200)
    comment: str = Field("", max_length=2000)


@router.get("/rules", summary="List alert rules", description="Rules created over the API.", dependencies=[READ_RULES])
async def list_rules(redis: RedisDep, settings: SettingsDep) -> RuleList:
    rules, _, _ = await alert_config.read_dynamic(redis, _names(settings))
    return RuleList(rules=sorted(rules.values(), key=lambda rule: rule.id))


@router.get(
    "/rules/{rule_id}",
    summary="Read an alert rule",
    description="One rule by id.",
    responses=NOT_FOUND,
    dependencies=[READ_RULES],
)
async def read_rule(rule_id: RuleIdPath, redis: RedisDep, settings: SettingsDep) -> Rule:
    rules, _, _ = await alert_config.read_dynamic(redis, _names(settings))
    if rule_id not in rules:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert rule {rule_id!r}")
    return rules[rule_id]


@router.put(
    "/rules/{rule_id}",
    summary="Create or replace an alert rule",
    description="The body is a rule as in docs/alerts.md; its id must equal the path's. "
    "The alerts worker applies it at its next evaluation tick.",
    dependencies=[WRITE_ALERTS],
)
async def put_rule(rule_id: RuleIdPath, rule: Rule, writer: AlertConfigWriterDep) -> Rule:
    if rule.id != rule_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the body's id {rule.id!r} is not {rule_id!r}")
    await _written(writer.put_rule(rule))
    return rule


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an alert rule",
    description="Its alerts resolve at the next evaluation tick.",
    responses=NOT_FOUND,
    dependencies=[WRITE_ALERTS],
)
async def delete_rule(rule_id: RuleIdPath, writer: AlertConfigWriterDep) -> None:
    if not await _written(writer.delete_rule(rule_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert rule {rule_id!r}")


@router.get(
    "/silences", summary="List silences", description="Silences written over the API.", dependencies=[READ_RULES]
)
async def list_silences(redis: RedisDep, settings: SettingsDep) -> SilenceList:
    _, silences, _ = await alert_config.read_dynamic(redis, _names(settings))
    return SilenceList(silences=sorted(silences, key=lambda silence: silence.id))


@router.put(
    "/silences/{silence_id}",
    summary="Create or replace a silence",
    description="Notifications of alerts whose labels match are held back until it ends "
    "(or until the alert resolves, for an until-resolved silence).",
    dependencies=[WRITE_ALERTS],
)
async def put_silence(
    silence_id: Annotated[str, Path(min_length=1, max_length=128)],
    silence: Silence,
    writer: AlertConfigWriterDep,
) -> Silence:
    if silence.id != silence_id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the body's id {silence.id!r} is not {silence_id!r}"
        )
    await _written(writer.put_silence(silence))
    return silence


@router.delete(
    "/silences/{silence_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a silence",
    description="Notifications resume at the next evaluation tick.",
    responses=NOT_FOUND,
    dependencies=[WRITE_ALERTS],
)
async def delete_silence(
    silence_id: Annotated[str, Path(min_length=1, max_length=128)], writer: AlertConfigWriterDep
) -> None:
    if not await _written(writer.delete_silence(silence_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no silence {silence_id!r}")


@router.get(
    "/active",
    summary="Alerts pending or firing now",
    description="As the alerts worker keeps them; those of the scopes the caller may read.",
)
async def active_alerts(redis: RedisDep, settings: SettingsDep, readable: ScopeFilterDep) -> ActiveAlerts:
    active = await alert_config.read_active(redis, _names(settings))
    return ActiveAlerts(alerts={fp: alert for fp, alert in active.items() if readable.allows_alert(alert)})


@router.post(
    "/active/{fingerprint}/ack",
    summary="Acknowledge a firing alert",
    description="Its repeats stop for this firing episode; its resolution is still notified.",
    responses=NOT_FOUND,
    dependencies=[WRITE_ALERTS],
)
async def acknowledge(
    fingerprint: Annotated[str, Path(min_length=1, max_length=200)],
    body: AckRequest,
    redis: RedisDep,
    settings: SettingsDep,
    writer: AlertConfigWriterDep,
    now: NowDep,
) -> Acknowledgement:
    names = _names(settings)
    if fingerprint not in await alert_config.read_active(redis, names):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {fingerprint!r} is pending or firing")
    ack = Acknowledgement(fingerprint=fingerprint, episode=body.episode, by=body.by, at=now, comment=body.comment)
    await _written(writer.put_ack(ack))
    return ack


@router.get(
    "/history",
    summary="Alert history",
    description="Every state change and every notification sent or failed, newest first; those of the "
    "scopes the caller may read (notifications: only for those who read the company).",
)
async def history(
    redis: RedisDep,
    settings: SettingsDep,
    readable: ScopeFilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(description="entry id to page before", pattern=r"^\d+-\d+$")] = None,
) -> History:
    keep = None if readable.principal.reads_everything else readable.allows_alert
    entries, next_before = await alert_config.read_history(
        redis, _names(settings), count=limit, before=before, keep=keep
    )
    return History(entries=entries, next_before=next_before)
