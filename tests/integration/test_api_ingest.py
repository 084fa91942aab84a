"""HTTP ingest: every reject reason reachable at the API, all-or-nothing, limits, Kafka down.

The produce path against a real broker is covered by the end-to-end tests; here Kafka is a
closed loopback port, which also checks the 503 answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

CLOCK = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # the harness's fixed clock


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "call",
        "occurred_at": "2026-11-27T10:00:00+01:00",
        "manager_id": "mgr-001",
        "team_id": "team-01",
        "duration_s": 120,
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


async def post(api: RunningApi, body: Any) -> tuple[int, Any]:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await api.http.post("/api/v1/events", content=content, headers={"content-type": "application/json"})
    return response.status_code, response.json()


async def test_a_body_that_is_not_json_answers_400_invalid_json(api: RunningApi) -> None:
    for body in (b"{not json", b'{"amount": NaN}', b"\xff\xfe"):
        status, answer = await post(api, body)

        assert status == 400, body
        assert answer["accepted"] == 0
        [error] = answer["errors"]
        assert error["index"] is None
        assert error["code"] == "invalid_json"
        assert error["problems"][0]["message"].startswith("not UTF-8 JSON")


async def test_every_reject_code_is_reported_per_record_and_nothing_is_produced(api: RunningApi) -> None:
    await api.redis.set(api.keys.watermark, str(int(CLOCK.timestamp() * 1_000_000)))
    records = [
        event(event_id="ok-1"),
        42,
        event(event_id="e-schema", manager_id=..., duration_s=1.5),
        event(event_id="e-stage", type="deal_stage_changed", deal_id="d-1", stage="won", duration_s=...),
        event(event_id="e-currency", currency="EUR"),
        event(event_id="e-future", occurred_at="2026-11-29T12:00:00Z"),
        event(event_id="e-old", occurred_at="2024-11-01T00:00:00Z"),
        event(event_id="e-naive", occurred_at="2026-11-27T10:00:00"),
        event(event_id="e-type", type="lunch"),
        event(event_id="e-amount", type="deal_created", deal_id="d-2", customer_id="c-1", amount="-5", duration_s=...),
    ]

    status, answer = await post(api, records)

    assert status == 422
    assert answer["accepted"] == 0
    by_index = {error["index"]: error for error in answer["errors"]}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert by_index[1]["code"] == "invalid_json"
    assert "expected a JSON object" in by_index[1]["problems"][0]["message"]
    schema = by_index[2]
    assert schema["code"] == "schema_violation"
    assert {problem["field"] for problem in schema["problems"]} == {"manager_id", "duration_s"}
    assert next(p for p in schema["problems"] if p["field"] == "duration_s")["value"] == "1.5"
    assert by_index[3]["code"] == "unknown_stage"
    assert by_index[3]["problems"] == [
        {
            "field": "stage",
            "value": "won",
            "message": "not a configured open stage; expected one of ['new', 'qualified', 'proposal', 'negotiation']",
        }
    ]
    assert by_index[4]["code"] == "currency_mismatch"
    assert by_index[4]["problems"][0] == {
        "field": "currency",
        "value": "EUR",
        "message": "must be the reporting currency USD",
    }
    assert by_index[5]["code"] == "in_future"
    assert by_index[5]["problems"][0]["field"] == "occurred_at"
    assert by_index[5]["problems"][0]["value"] == "2026-11-29T12:00:00+00:00"
    assert by_index[6]["code"] == "too_old"
    assert "earlier than the watermark 2026-11-27T12:00:00+00:00" in by_index[6]["problems"][0]["message"]
    assert by_index[7]["code"] == "schema_violation"
    assert by_index[7]["problems"][0]["field"] == "occurred_at"
    assert by_index[8] == {
        "index": 8,
        "code": "schema_violation",
        "problems": [
            {
                "field": "type",
                "value": "lunch",
                "message": "unknown event type; expected one of ['call', 'deal_created', 'deal_lost', "
                "'deal_stage_changed', 'deal_won', 'meeting', 'proposal_sent']",
            }
        ],
    }
    assert by_index[9]["code"] == "schema_violation"
    assert by_index[9]["problems"][0]["field"] == "amount"
    samples = await api.metric_samples()
    assert samples[("crm_ingest_events_total", (("result", "rejected"),))] == len(records)
    assert samples[("crm_ingest_events_total", (("result", "accepted"),))] == 0
    assert samples[("crm_ingest_events_total", (("result", "unavailable"),))] == 0  # Kafka was never tried


async def test_a_single_object_is_one_record(api: RunningApi) -> None:
    status, answer = await post(api, event(currency="GBP"))

    assert status == 422
    assert answer["errors"][0]["index"] == 0
    assert answer["errors"][0]["code"] == "currency_mismatch"


async def test_too_old_needs_the_workers_watermark(api: RunningApi) -> None:
    # Without a watermark (no event accepted yet) history of any age can be imported.
    status, answer = await post(api, [event(occurred_at="2020-01-01T00:00:00Z"), event(event_id="x", currency="EUR")])

    assert status == 422
    assert [error["index"] for error in answer["errors"]] == [1]


async def test_more_than_ten_thousand_events_answer_413(api: RunningApi) -> None:
    status, answer = await post(api, [{}] * 10_001)

    assert status == 413
    assert answer["detail"] == "10001 events in one request; send at most 10000 per request"


async def test_an_empty_array_accepts_nothing(api: RunningApi) -> None:
    status, answer = await post(api, [])

    assert (status, answer) == (202, {"accepted": 0})


async def test_kafka_unreachable_answers_503(api: RunningApi) -> None:
    status, answer = await post(api, [event(event_id="a"), event(event_id="b", type="meeting")])

    assert status == 503
    assert answer["detail"].startswith(f"Kafka at {api.settings.kafka.bootstrap_servers} is unavailable")
    assert answer["detail"].endswith("retry later")
    samples = await api.metric_samples()
    assert samples[("crm_ingest_events_total", (("result", "unavailable"),))] == 2
    health = await api.http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "degraded", "redis": True, "kafka": False}


async def test_a_large_valid_batch_is_validated_then_answers_503_without_kafka(api: RunningApi) -> None:
    batch = [
        event(event_id=f"e-{i}", type="deal_created", deal_id=f"d{i}", customer_id="c", amount="10.5", duration_s=...)
        for i in range(3000)
    ]

    status, answer = await post(api, batch)

    assert status == 503, answer
    samples = await api.metric_samples()
    assert samples[("crm_ingest_events_total", (("result", "unavailable"),))] == 3000


async def test_a_body_over_the_byte_limit_answers_413(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ingest_max_bytes": 2048}) as api:
        status, answer = await post(api, [event(event_id=f"e-{i}") for i in range(100)])

    assert status == 413
    assert answer["detail"] == "request body larger than 2048 bytes; send the events in smaller batches"
