"""The messages of the live WebSocket protocol (``/ws``), as documented in docs/websocket.md."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from services.kpis.measures import KpiValues, PipelineValues
from services.topics import Granularity

log = logging.getLogger(__name__)

ALL_SCOPES = "*"
PIPELINE = "pipeline"
"""Not a KPI: naming it in a subscribe's ``kpis`` asks for the open pipeline (snapshot and ``pipeline`` messages)."""
KPI_NAMES: frozenset[str] = frozenset(KpiValues.model_fields)
SEQ_PATTERN = r"^\d+-\d+$"


def check_scope_token(token: str) -> str:
    """A scope token is ``c`` (company), ``m:<manager_id>`` or ``t:<team_id>``."""
    if token == "c" or (token[:2] in ("m:", "t:") and len(token) > 2):
        return token
    raise ValueError(f"{token!r} is not a scope: write 'c', 'm:<manager_id>', 't:<team_id>' or '*' for all")


# -- client -> server --


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _check_scopes(scopes: str | list[str]) -> str | list[str]:
    if isinstance(scopes, list):
        if ALL_SCOPES in scopes:
            return ALL_SCOPES
        return [check_scope_token(token) for token in scopes]
    return scopes


class _ScopesMessage(_ClientMessage):
    scopes: Literal["*"] | list[str] = Field(description='scope tokens ("c", "m:<id>", "t:<id>") or "*"')

    _valid_scopes = field_validator("scopes")(_check_scopes)


class SubscribeRequest(_ClientMessage):
    """Start receiving a snapshot, then the changes, of these scopes ("*": every scope), and/or alerts."""

    type: Literal["subscribe"]
    scopes: Literal["*"] | list[str] = Field(
        default_factory=list, description='scope tokens ("c", "m:<id>", "t:<id>") or "*"'
    )
    kpis: list[str] | None = Field(
        None, description='only these KPIs (and "pipeline" for the open pipeline); absent: every KPI and the pipeline'
    )
    since: str | None = Field(
        None,
        pattern=SEQ_PATTERN,
        description="resume: replay the changes of these scopes after this seq (the last one received) "
        "instead of sending a snapshot",
    )
    since_i: int | None = Field(
        None, ge=0, description="the i of the last change or pipeline message received; omit after a snapshot"
    )
    alerts: bool = Field(False, description="also receive the alert ticker (alert state changes and notifications)")
    alerts_since: str | None = Field(
        None, pattern=SEQ_PATTERN, description="replay the alert messages after this alert seq before the live ones"
    )

    _valid_scopes = field_validator("scopes")(_check_scopes)

    @field_validator("kpis")
    @classmethod
    def _known_kpis(cls, kpis: list[str] | None) -> list[str] | None:
        if kpis is None:
            return None
        unknown = [name for name in kpis if name not in KPI_NAMES and name != PIPELINE]
        if unknown:
            raise ValueError(
                f"unknown KPI(s) {unknown}: choose from {sorted(KPI_NAMES)} or {PIPELINE!r}, or omit 'kpis' for all"
            )
        return list(dict.fromkeys(kpis))


class UnsubscribeRequest(_ScopesMessage):
    """Stop receiving changes of these scopes ("*": all of them)."""

    type: Literal["unsubscribe"]


class PongMessage(_ClientMessage):
    """Optional answer to a server ping; ignored."""

    type: Literal["pong"]


ClientMessage = Annotated[SubscribeRequest | UnsubscribeRequest | PongMessage, Field(discriminator="type")]
client_message_adapter: TypeAdapter[SubscribeRequest | UnsubscribeRequest | PongMessage] = TypeAdapter(ClientMessage)


# -- server -> client --


class BucketKpis(BaseModel):
    """The KPIs of one bucket (the current day or month) of a scope."""

    label: str = Field(description="bucket label: 2026-11-27 for a day, 2026-11 for a month")
    kpis: KpiValues


class ScopeSnapshot(BaseModel):
    day: BucketKpis
    month: BucketKpis
    pipeline: PipelineValues | None = Field(
        None, description="current open pipeline of the scope; absent when a KPI filter leaves out 'pipeline'"
    )


class SnapshotMessage(BaseModel):
    """Answer to a subscribe: the current day and month of every newly subscribed scope."""

    type: Literal["snapshot"] = "snapshot"
    seq: str = Field(description="change sequence number the snapshot includes; later changes have a larger one")
    resync: bool = Field(
        False, description="true: the resume point asked for is older than the change feed holds; start over from this"
    )
    scopes: dict[str, ScopeSnapshot]


class ResumedMessage(BaseModel):
    """Sent after the replay of a resume: every missed change up to ``seq`` has been sent."""

    type: Literal["resumed"] = "resumed"
    since: str = Field(description="the resume point asked for")
    seq: str = Field(description="the last change replayed (the resume point itself when none was missed)")
    replayed: int = Field(description="change and pipeline messages replayed")


class ChangeMessage(BaseModel):
    """New absolute KPI values of one bucket of a subscribed scope."""

    type: Literal["change"] = "change"
    seq: str
    i: int = Field(description="position of this bucket within the change-feed entry (for resume)")
    scope: str
    g: Granularity
    b: str = Field(description="bucket label")
    kpis: KpiValues


class PipelineMessage(BaseModel):
    """New open pipeline of a subscribed scope."""

    type: Literal["pipeline"] = "pipeline"
    seq: str
    i: int
    scope: str
    pipeline: PipelineValues


class AlertMessage(BaseModel):
    """One entry of the alert history, trimmed for a ticker (GET /api/v1/alerts/history has it whole)."""

    type: Literal["alert"] = "alert"
    seq: str = Field(description="the alert-history entry id (its own sequence, unrelated to change seqs)")
    kind: Literal["state", "notification"]
    at: str | None = None
    # kind "state"
    alertname: str | None = None
    severity: str | None = None
    message: str | None = Field(None, description="the rule's summary, rendered for this alert")
    kpi: str | None = None
    rule_id: str | None = None
    scope: str | None = None
    fingerprint: str | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    value: str | None = None
    # kind "notification"
    outcome: str | None = None
    receiver: str | None = None
    status: str | None = None
    firing: int | None = Field(None, description="number of firing alerts in the notification")
    resolved: int | None = Field(None, description="number of resolved alerts in the notification")

    model_config = ConfigDict(populate_by_name=True)


class PingMessage(BaseModel):
    type: Literal["ping"] = "ping"


class ErrorMessage(BaseModel):
    """A client message could not be understood; the connection stays open."""

    type: Literal["error"] = "error"
    message: str


def decode_alert_entry(entry_id: str, fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The alert-history entry of a stream entry's fields (None, logged, if it cannot be read)."""
    data = fields.get(b"data", fields.get("data"))
    try:
        entry = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict) or entry.get("kind") not in ("state", "notification"):
        log.error("alert history: skipping entry %s: %.200r", entry_id, data)
        return None
    return entry


def alert_text(entry_id: str, entry: Mapping[str, Any]) -> str:
    """The ticker message of one alert-history entry (as ``decode_alert_entry`` reads it)."""
    labels = entry.get("labels") or {}
    if entry["kind"] == "state":
        message = AlertMessage(
            seq=entry_id,
            kind="state",
            at=entry.get("at"),
            alertname=entry.get("rule_name") or labels.get("alertname"),
            severity=entry.get("severity") or labels.get("severity"),
            message=entry.get("message"),
            kpi=entry.get("kpi") or labels.get("kpi"),
            rule_id=entry.get("rule_id"),
            scope=entry.get("scope"),
            fingerprint=entry.get("fingerprint"),
            from_=entry.get("from"),
            to=entry.get("to"),
            value=entry.get("value"),
        )
    else:
        message = AlertMessage(
            seq=entry_id,
            kind="notification",
            at=entry.get("at"),
            outcome=entry.get("outcome"),
            receiver=entry.get("receiver"),
            status=entry.get("status"),
            firing=len(entry.get("firing") or ()),
            resolved=len(entry.get("resolved") or ()),
        )
    return message.model_dump_json(by_alias=True, exclude_none=True)
