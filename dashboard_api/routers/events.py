"""HTTP ingest of CRM events: validated all together, then produced to the Kafka event topic."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse

from dashboard_api.auth import require
from dashboard_api.dependencies import KeysDep, MetricsDep, NowDep, PublisherDep, RedisDep, SettingsDep
from dashboard_api.errors import KafkaUnavailable
from dashboard_api.ingest import (
    IngestAccepted,
    IngestError,
    IngestRejected,
    TooManyEvents,
    prepare_batch,
    read_watermark,
)
from dashboard_api.models import ErrorDetail
from services.auth import Action
from services.schemas.events import EventRejected, RejectCode, ValidationPolicy

router = APIRouter(tags=["ingest"])

IN_THREAD_ABOVE_BYTES = 64 * 1024

EXAMPLE_EVENT = {
    "event_id": "crm-7f3a-000123",
    "type": "deal_won",
    "occurred_at": "2026-11-27T14:05:00+01:00",
    "manager_id": "mgr-001",
    "team_id": "team-01",
    "deal_id": "deal-42",
    "amount": "12500.00",
    "currency": "USD",
}

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One CRM event object, or a JSON array of up to 10,000 of them (see docs/events.md).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "one CRM event"},
                        {"type": "array", "items": {"type": "object"}, "maxItems": 10_000},
                    ]
                },
                "examples": {
                    "one event": {"value": EXAMPLE_EVENT},
                    "a batch": {"value": [EXAMPLE_EVENT, {**EXAMPLE_EVENT, "event_id": "crm-7f3a-000124"}]},
                },
            }
        },
    }
}


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _rejected(status_code: int, errors: list[IngestError]) -> JSONResponse:
    return JSONResponse(IngestRejected(errors=errors).model_dump(mode="json"), status_code=status_code)


@router.post(
    "/events",
    summary="Ingest CRM events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    openapi_extra=REQUEST_BODY,
    responses={
        400: {
            "model": IngestRejected,
            "description": "the body is not UTF-8 JSON (code invalid_json); nothing written",
        },
        413: {"model": ErrorDetail, "description": "too many events or too large a body; nothing written"},
        422: {"model": IngestRejected, "description": "some records break the contract; nothing written"},
        503: {"model": ErrorDetail, "description": "Kafka (or Redis) is unavailable; retry later"},
    },
    dependencies=[Depends(require(Action.INGEST))],
)
async def ingest_events(
    request: Request,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    now: NowDep,
    publisher: PublisherDep,
    metrics: MetricsDep,
) -> IngestAccepted | JSONResponse:
    """Validate every event of the request, then write them all to the event topic.

    All or nothing: if any record fails validation, the answer is 422 with every failing
    record's index, reason code and per-field problems, and nothing is written. Events are
    checked like the stream worker checks them (schema, stage, currency, not in the future,
    not older than the worker's watermark minus the retention). 202 means Kafka has them;
    the worker ignores a repeated event_id, so retrying after a 503 is safe.
    """
    limits = settings.api
    try:
        raw = await _read_body(request, limits.ingest_max_bytes)
    except _BodyTooLarge:
        return JSONResponse(
            {"detail": f"request body larger than {limits.ingest_max_bytes} bytes; send the events in smaller batches"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
    watermark = await read_watermark(redis, keys)
    prepare = functools.partial(
        prepare_batch,
        raw,
        ValidationPolicy.from_settings(settings.business),
        now=now,
        watermark=watermark,
        max_events=limits.ingest_max_events,
    )
    try:
        # A large batch takes a noticeable time to validate: off the event loop, so live push keeps flowing.
        batch = await asyncio.to_thread(prepare) if len(raw) > IN_THREAD_ABOVE_BYTES else prepare()
    except EventRejected as exc:
        metrics.ingest_events.labels(result="rejected").inc()
        return _rejected(
            status.HTTP_400_BAD_REQUEST,
            [IngestError(index=None, code=RejectCode.INVALID_JSON, problems=exc.rejection.problems)],
        )
    except TooManyEvents as exc:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    if batch.errors:
        metrics.ingest_events.labels(result="rejected").inc(batch.records)
        return _rejected(status.HTTP_422_UNPROCESSABLE_CONTENT, batch.errors)
    if not batch.messages:
        return IngestAccepted(accepted=0)
    try:
        await publisher.publish(batch.messages)
    except KafkaUnavailable as exc:
        metrics.ingest_events.labels(result="unavailable").inc(batch.records)
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    metrics.ingest_events.labels(result="accepted").inc(batch.records)
    return IngestAccepted(accepted=batch.records)
