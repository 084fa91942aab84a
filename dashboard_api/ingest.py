"""HTTP ingest: validating a request's events all together before anything is produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from services.schemas.events import (
    CrmEvent,
    EventRejected,
    FieldProblem,
    RejectCode,
    ValidationPolicy,
    canonical_json,
    check_time,
    decode_json,
    validate_payload,
)
from services.topics import RedisKeys

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class IngestError(BaseModel):
    """Why one record of the request was rejected."""

    index: int | None = Field(description="position of the record in the request (0 for a single object)")
    code: RejectCode = Field(description="the contract's reason code")
    problems: list[FieldProblem]


class IngestAccepted(BaseModel):
    """Every event of the request was validated and written to Kafka."""

    accepted: int


class IngestRejected(BaseModel):
    """Nothing was written: the reasons, per failing record."""

    accepted: int = 0
    errors: list[IngestError]


async def read_watermark(redis: Redis, keys: RedisKeys) -> datetime | None:
    """The worker's watermark (highest accepted ``occurred_at``), or None before any event."""
    raw = await redis.get(keys.watermark)
    if raw is None:
        return None
    return EPOCH + timedelta(microseconds=int(raw))


def records_of(body: Any) -> list[Any]:
    """The records of a decoded request body: a JSON array's items, or the one value sent."""
    return list(body) if isinstance(body, list) else [body]


def validate_records(
    records: list[Any], policy: ValidationPolicy, *, now: datetime, watermark: datetime | None
) -> tuple[list[CrmEvent], list[IngestError]]:
    """Validate every record in contract order; answer the events, or every record's reasons."""
    events: list[CrmEvent] = []
    errors: list[IngestError] = []
    for index, record in enumerate(records):
        try:
            event = validate_payload(record, policy)
            check_time(event, policy, now=now, watermark=watermark)
        except EventRejected as exc:
            errors.append(IngestError(index=index, code=exc.rejection.code, problems=exc.rejection.problems))
            continue
        events.append(event)
    return events, errors


class TooManyEvents(Exception):
    """More records in one request than allowed."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} events in one request; send at most {limit} per request")


@dataclass(frozen=True)
class PreparedBatch:
    """A request body decoded and validated: Kafka messages, or the reasons it cannot be taken."""

    records: int
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) of every event, in request order, when all are valid."""
    errors: list[IngestError] = field(default_factory=list)


def prepare_batch(
    raw: bytes, policy: ValidationPolicy, *, now: datetime, watermark: datetime | None, max_events: int
) -> PreparedBatch:
    """Decode, validate and serialize a request body (CPU only: callable from a worker thread).

    Raises EventRejected (invalid_json) when the body is not JSON, TooManyEvents over the limit.
    """
    records = records_of(decode_json(raw))
    if len(records) > max_events:
        raise TooManyEvents(len(records), max_events)
    events, errors = validate_records(records, policy, now=now, watermark=watermark)
    if errors:
        return PreparedBatch(records=len(records), errors=errors)
    return PreparedBatch(
        records=len(records),
        messages=[(event.kafka_key.encode(), canonical_json(event)) for event in events],
    )
