"""CRM events: the pydantic models of CONTRACT section 1 and their validation.

Validation answers either a typed event or a :class:`Rejection` with the contract's reason
code, the field at fault and the offending value. Codes are checked in contract order, and
the first failing check wins: ``invalid_json``, ``schema_violation``, ``unknown_stage``,
``currency_mismatch``, ``in_future``, ``too_old``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import accumulate
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)

from services.settings import BusinessSettings

MONEY_SCALE = 10_000
"""Money is kept as integer ten-thousandths of the reporting currency, so sums stay exact."""
MAX_AMOUNT = Decimal(10) ** 12


class EventType(StrEnum):
    CALL = "call"
    MEETING = "meeting"
    PROPOSAL_SENT = "proposal_sent"
    DEAL_CREATED = "deal_created"
    DEAL_STAGE_CHANGED = "deal_stage_changed"
    DEAL_WON = "deal_won"
    DEAL_LOST = "deal_lost"


DEAL_EVENT_TYPES = frozenset(
    {EventType.DEAL_CREATED, EventType.DEAL_STAGE_CHANGED, EventType.DEAL_WON, EventType.DEAL_LOST}
)


class RejectCode(StrEnum):
    """Why a record was rejected (CONTRACT section 1), in the order the checks run."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_STAGE = "unknown_stage"
    CURRENCY_MISMATCH = "currency_mismatch"
    IN_FUTURE = "in_future"
    TOO_OLD = "too_old"


def _require_text_time(value: Any) -> Any:
    # RFC 3339 is a string; pydantic would otherwise take epoch numbers as datetimes.
    if not isinstance(value, str):
        raise ValueError("occurred_at must be an RFC 3339 date-time string with an offset")
    return value


_BATCH_CONTEXT: dict[str, Any] = {"path": "validate_values"}
"""Marks validation by :func:`validate_values`, whose JSON decoder turns every number with a
fraction or an exponent into a binary float (``12.50`` arrives as ``12.5``)."""


def _parse_amount(value: Any, info: ValidationInfo) -> Decimal:
    if isinstance(value, float) and info.context is _BATCH_CONTEXT:
        # The exact text of the number is lost; the record goes the exact per-record way instead.
        raise ValueError("amount is a binary float")
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float, str)):
        raise ValueError("amount must be a JSON number or a decimal string")
    try:
        amount = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not a finite number")
    if amount < 0:
        raise ValueError("amount must be >= 0")
    if amount > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    if (amount * MONEY_SCALE) != (amount * MONEY_SCALE).to_integral_value():
        raise ValueError("amount has more than 4 decimal places")
    return amount


OccurredAt = Annotated[AwareDatetime, BeforeValidator(_require_text_time)]
Amount = Annotated[Decimal, BeforeValidator(_parse_amount)]
Id128 = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id128
    occurred_at: OccurredAt
    manager_id: Id128
    team_id: StrictStr | None = None
    currency: StrictStr | None = None

    @property
    def kafka_key(self) -> str:
        deal_id = getattr(self, "deal_id", None)
        return deal_id if deal_id is not None else self.manager_id


class _Activity(_EventBase):
    deal_id: StrictStr | None = None
    customer_id: StrictStr | None = None


class CallEvent(_Activity):
    type: Literal[EventType.CALL] = EventType.CALL
    duration_s: Annotated[StrictInt, Field(ge=0)] | None = None
    outcome: StrictStr | None = None


class MeetingEvent(_Activity):
    type: Literal[EventType.MEETING] = EventType.MEETING
    duration_s: Annotated[StrictInt, Field(ge=0)] | None = None
    outcome: StrictStr | None = None


class ProposalSentEvent(_Activity):
    type: Literal[EventType.PROPOSAL_SENT] = EventType.PROPOSAL_SENT


class _DealEvent(_EventBase):
    deal_id: StrictStr
    customer_id: StrictStr | None = None


class DealCreatedEvent(_DealEvent):
    type: Literal[EventType.DEAL_CREATED] = EventType.DEAL_CREATED
    customer_id: StrictStr
    amount: Amount
    stage: StrictStr | None = None
    lead_source: StrictStr = "unknown"


class DealStageChangedEvent(_DealEvent):
    type: Literal[EventType.DEAL_STAGE_CHANGED] = EventType.DEAL_STAGE_CHANGED
    stage: StrictStr
    amount: Amount | None = None


class DealWonEvent(_DealEvent):
    type: Literal[EventType.DEAL_WON] = EventType.DEAL_WON
    amount: Amount | None = None


class DealLostEvent(_DealEvent):
    type: Literal[EventType.DEAL_LOST] = EventType.DEAL_LOST
    lost_reason: StrictStr = "unspecified"


CrmEvent = (
    CallEvent
    | MeetingEvent
    | ProposalSentEvent
    | DealCreatedEvent
    | DealStageChangedEvent
    | DealWonEvent
    | DealLostEvent
)
"""A validated CRM event: a tagged union on ``type``."""

DEAL_EVENT_MODELS = (DealCreatedEvent, DealStageChangedEvent, DealWonEvent, DealLostEvent)
"""The deal_* event models, for isinstance checks."""

EVENT_MODELS: dict[str, type[_EventBase]] = {
    EventType.CALL: CallEvent,
    EventType.MEETING: MeetingEvent,
    EventType.PROPOSAL_SENT: ProposalSentEvent,
    EventType.DEAL_CREATED: DealCreatedEvent,
    EventType.DEAL_STAGE_CHANGED: DealStageChangedEvent,
    EventType.DEAL_WON: DealWonEvent,
    EventType.DEAL_LOST: DealLostEvent,
}


class FieldProblem(BaseModel):
    """One thing wrong with a record: which field, what value, and why."""

    field: str | None
    value: Any = None
    message: str


class Rejection(BaseModel):
    """Why a record was not accepted (the contract's reason code first)."""

    code: RejectCode
    problems: list[FieldProblem]

    @property
    def field(self) -> str | None:
        return self.problems[0].field

    @property
    def message(self) -> str:
        return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in self.problems)


class EventRejected(Exception):
    """Raised by :func:`validate_event` when a record breaks the contract."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.code}: {rejection.message}")
        self.rejection = rejection


def _reject(code: RejectCode, field_name: str | None, value: Any, message: str) -> EventRejected:
    return EventRejected(
        Rejection(code=code, problems=[FieldProblem(field=field_name, value=_jsonable(value), message=message)])
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:200]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_floats(data: Any) -> bool:
    """True when no event field (top level of an object, or of each object of an array) is a float."""
    if isinstance(data, dict):
        return float not in map(type, data.values())
    if isinstance(data, list):
        return all(isinstance(item, dict) and _no_floats(item) for item in data)
    return False


def decode_json(raw: bytes | str) -> Any:
    """Decode UTF-8 JSON exactly: numbers with a fraction become Decimal, NaN/Infinity fail.

    orjson decodes first (fast); whenever it fails or meets a number with a fraction where an
    event field could hold it, the exact standard decoder decides, so results never differ.
    """
    try:
        fast = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if _no_floats(fast):
            return fast
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _reject(RejectCode.INVALID_JSON, None, None, f"not UTF-8 JSON: {exc}") from None


@dataclass(frozen=True)
class ValidationPolicy:
    """The configured rules an event is checked against beyond its schema."""

    open_stages: tuple[str, ...]
    currency: str
    future_tolerance: timedelta
    retention: timedelta
    _stage_set: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_stage_set", frozenset(self.open_stages))

    @classmethod
    def from_settings(cls, business: BusinessSettings) -> ValidationPolicy:
        return cls(
            open_stages=business.stage_names,
            currency=business.currency,
            future_tolerance=timedelta(hours=business.future_tolerance_hours),
            retention=timedelta(days=business.history_retention_days),
        )

    @property
    def first_stage(self) -> str:
        return self.open_stages[0]

    def is_open_stage(self, stage: str) -> bool:
        return stage in self._stage_set


def validate_payload(data: Any, policy: ValidationPolicy) -> CrmEvent:
    """Check a decoded JSON value against the schema and the configured stages and currency."""
    if not isinstance(data, dict):
        raise _reject(RejectCode.INVALID_JSON, None, None, f"expected a JSON object, got {type(data).__name__}")
    payload = {key: value for key, value in data.items() if value is not None}
    event_type = payload.get("type")
    model = EVENT_MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        if "type" not in payload:
            raise _reject(RejectCode.SCHEMA_VIOLATION, "type", None, "field required")
        raise _reject(
            RejectCode.SCHEMA_VIOLATION,
            "type",
            event_type,
            f"unknown event type; expected one of {sorted(str(t) for t in EVENT_MODELS)}",
        )
    try:
        event: CrmEvent = model.model_validate(payload)  # type: ignore[assignment]
    except ValidationError as exc:
        problems = [
            FieldProblem(
                field=".".join(str(part) for part in error["loc"]) or None,
                value=_jsonable(error.get("input")) if error["type"] != "missing" else None,
                message=error["msg"],
            )
            for error in exc.errors(include_url=False)
        ]
        raise EventRejected(Rejection(code=RejectCode.SCHEMA_VIOLATION, problems=problems)) from None
    return _apply_policy(event, policy)


def _apply_policy(event: CrmEvent, policy: ValidationPolicy) -> CrmEvent:
    """The checks after the schema (stage, then currency), and deal_created's default stage."""
    # (not getattr: a pydantic model without the field takes a slow path to raise AttributeError;
    # type(), not isinstance: the models have no subclasses, and isinstance of a pydantic model
    # goes through ABCMeta, slow when the answer is no, as it mostly is)
    stage = event.stage if type(event) is DealCreatedEvent or type(event) is DealStageChangedEvent else None
    if type(event) is DealCreatedEvent and stage is None:
        event = event.model_copy(update={"stage": policy.first_stage})
    elif stage is not None and not policy.is_open_stage(stage):
        raise _reject(
            RejectCode.UNKNOWN_STAGE,
            "stage",
            stage,
            f"not a configured open stage; expected one of {list(policy.open_stages)}",
        )
    if event.currency is not None and event.currency != policy.currency:
        raise _reject(
            RejectCode.CURRENCY_MISMATCH,
            "currency",
            event.currency,
            f"must be the reporting currency {policy.currency}",
        )
    return event


_NOT_JSON = (b"NaN", b"Infinity")
"""What pydantic-core's JSON decoder takes, though it is not JSON (as ``-Infinity`` too)."""

_FAST_BATCH: TypeAdapter[list[Any]] = TypeAdapter(
    list[Annotated[Json[Annotated[CrmEvent, Field(discriminator="type")]] | Any, Field(union_mode="left_to_right")]],
    # Keys repeat from record to record, most values (ids, times) never do: caching them is waste.
    config=ConfigDict(cache_strings="keys"),
)
"""Each raw value decoded and validated in one pydantic-core call: the event, or (when anything
about it fails) the raw value itself, which then takes the per-record way."""


def validate_values(raws: Sequence[bytes], policy: ValidationPolicy) -> list[CrmEvent | Rejection]:
    """Validate many raw record values: one result per raw value, in order, the same as
    ``validate_payload(decode_json(raw), policy)`` would give (a Rejection for an EventRejected).

    Faster than one by one: pydantic-core decodes and validates all values in one call, without
    building Python dicts. It only answers an event where that is sure to be the per-record one;
    every other value takes the per-record way, so rejections are always the per-record ones:

    - anything pydantic-core rejects (bad JSON or UTF-8, not an object, an unknown or missing
      ``type``, a schema violation), including an amount that is a JSON number with a fraction or
      an exponent, since pydantic-core decodes it to a binary float, not an exact Decimal;
    - a value containing ``NaN`` or ``Infinity`` anywhere (even in a string): pydantic-core's
      decoder takes them, though they are not JSON.

    What both decoders take, they decode alike: strings, integers of any size, and a repeated key
    (the last one counts). A float anywhere but the amount fails a strict field or sits in an
    extra field, ignored either way. A null is absent per record; pydantic-core takes one only
    where None is valid, and every such field defaults to None, so only the fields set differ
    (:func:`_unset_nulls`). The stage and currency checks and deal_created's default stage are
    the per-record code.
    """
    values = list(raws)
    joined = b"".join(values)
    inputs: list[bytes | None] = list(values)
    # (a memchr for N and I first: several times faster than searching for the tokens, and rare)
    if b"N" in joined or b"I" in joined:
        for index in _values_holding(_NOT_JSON, values, joined):
            inputs[index] = None
    maybe_null = b"null" in joined
    validated = _FAST_BATCH.validate_python(inputs, context=_BATCH_CONTEXT)
    results: list[CrmEvent | Rejection] = []
    for raw, source, item in zip(values, inputs, validated, strict=True):
        try:
            if item is source:
                event = validate_payload(decode_json(raw), policy)
            else:
                if maybe_null and b"null" in raw:
                    _unset_nulls(item)
                event = _apply_policy(item, policy)
            results.append(event)
        except EventRejected as rejected:
            results.append(rejected.rejection)
    return results


def _values_holding(tokens: tuple[bytes, ...], values: list[bytes], joined: bytes) -> set[int]:
    """The indices of the values in which one of ``tokens`` occurs, found in ``values`` joined.

    One search of the joined values is much faster than one per value when the tokens are rare. A
    token that begins in one value and ends in the next counts for the first (a needless fallback).
    """
    ends = list(accumulate(map(len, values)))
    found: set[int] = set()
    for token in tokens:
        at = joined.find(token)
        while at >= 0:
            found.add(bisect_right(ends, at))
            at = joined.find(token, at + 1)
    return found


def _unset_nulls(event: CrmEvent) -> None:
    """Leave the fields validated from a null out of the fields set, as if they were absent.

    Exact: a None in an event comes either from a null or from a default, which is never set.
    """
    event.__pydantic_fields_set__.difference_update([name for name, value in event.__dict__.items() if value is None])


def check_time(event: CrmEvent, policy: ValidationPolicy, *, now: datetime, watermark: datetime | None) -> None:
    """The two time checks: not too far in the future, not older than the history retention."""
    if event.occurred_at > now + policy.future_tolerance:
        raise _reject(
            RejectCode.IN_FUTURE,
            "occurred_at",
            event.occurred_at,
            f"more than {policy.future_tolerance} after the wall clock ({now.isoformat()})",
        )
    if watermark is not None and event.occurred_at < watermark - policy.retention:
        raise _reject(
            RejectCode.TOO_OLD,
            "occurred_at",
            event.occurred_at,
            f"earlier than the watermark {watermark.isoformat()} minus the retention of {policy.retention.days} days",
        )


def validate_event(
    raw: bytes | str | dict[str, Any],
    policy: ValidationPolicy,
    *,
    now: datetime,
    watermark: datetime | None,
) -> CrmEvent:
    """Validate one record end to end (JSON, schema, stage, currency, time); raise EventRejected."""
    data = raw if isinstance(raw, dict) else decode_json(raw)
    event = validate_payload(data, policy)
    check_time(event, policy, now=now, watermark=watermark)
    return event


def amount_units(amount: Decimal) -> int:
    """Money as exact integer units of 1/MONEY_SCALE of the reporting currency."""
    return int(amount * MONEY_SCALE)


def units_to_decimal(units: int) -> Decimal:
    return (Decimal(units) / MONEY_SCALE).quantize(Decimal(1) / MONEY_SCALE)


def canonical_json(event: CrmEvent) -> bytes:
    """The event as it is produced to Kafka: validated fields only, amounts as decimal strings."""
    return event.model_dump_json(exclude_none=True).encode()


__all__ = [
    "DEAL_EVENT_MODELS",
    "DEAL_EVENT_TYPES",
    "MONEY_SCALE",
    "CrmEvent",
    "EventRejected",
    "EventType",
    "FieldProblem",
    "RejectCode",
    "Rejection",
    "ValidationPolicy",
    "amount_units",
    "canonical_json",
    "check_time",
    "decode_json",
    "validate_event",
    "validate_payload",
    "validate_values",
]
