"""The messages of the live WebSocket protocol (``/ws``), as documented in docs/websocket.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from services.kpis.measures import KpiValues, PipelineValues
from services.topics import Granularity

ALL_SCOPES = "*"


def check_scope_token(token: str) -> str:
    """A scope token is ``c`` (company), ``m:<manager_id>`` or ``t:<team_id>``."""
    if token == "c" or (token[:2] in ("m:", "t:") and len(token) > 2):
        return token
    raise ValueError(f"{token!r} is not a scope: write 'c', 'm:<manager_id>', 't:<team_id>' or '*' for all")


# -- client -> server --


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _ScopesMessage(_ClientMessage):
    scopes: Literal["*"] | list[str] = Field(description='scope tokens ("c", "m:<id>", "t:<id>") or "*"')

    @field_validator("scopes")
    @classmethod
    def _valid_scopes(cls, scopes: str | list[str]) -> str | list[str]:
        if isinstance(scopes, list):
            if ALL_SCOPES in scopes:
                return ALL_SCOPES
            return [check_scope_token(token) for token in scopes]
        return scopes


class SubscribeRequest(_ScopesMessage):
    """Start receiving a snapshot, then the changes, of these scopes ("*": every scope)."""

    type: Literal["subscribe"]


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
    pipeline: PipelineValues = Field(description="current open pipeline of the scope")


class SnapshotMessage(BaseModel):
    """Answer to a subscribe: the current day and month of every newly subscribed scope."""

    type: Literal["snapshot"] = "snapshot"
    seq: str = Field(description="change sequence number the snapshot includes; later changes have a larger one")
    scopes: dict[str, ScopeSnapshot]


class ChangeMessage(BaseModel):
    """New absolute KPI values of one bucket of a subscribed scope."""

    type: Literal["change"] = "change"
    seq: str
    scope: str
    g: Granularity
    b: str = Field(description="bucket label")
    kpis: KpiValues


class PipelineMessage(BaseModel):
    """New open pipeline of a subscribed scope."""

    type: Literal["pipeline"] = "pipeline"
    seq: str
    scope: str
    pipeline: PipelineValues


class PingMessage(BaseModel):
    type: Literal["ping"] = "ping"


class ErrorMessage(BaseModel):
    """A client message could not be understood; the connection stays open."""

    type: Literal["error"] = "error"
    message: str
