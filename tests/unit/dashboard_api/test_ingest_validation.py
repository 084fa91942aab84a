"""Validating an ingest request's records all together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard_api.ingest import records_of, validate_records
from services.schemas.events import RejectCode, ValidationPolicy
from services.settings import BusinessSettings

POLICY = ValidationPolicy.from_settings(BusinessSettings())
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def call(event_id: str, **fields: object) -> dict[str, object]:
    return {"event_id": event_id, "type": "call", "occurred_at": "2026-11-27T09:00:00Z", "manager_id": "m1", **fields}


def test_a_single_object_or_an_array() -> None:
    assert records_of({"a": 1}) == [{"a": 1}]
    assert records_of([1, 2]) == [1, 2]
    assert records_of("text") == ["text"]


def test_all_valid_records_become_events_in_order() -> None:
    events, errors = validate_records([call("a"), call("b")], POLICY, now=NOW, watermark=None)

    assert errors == []
    assert [event.event_id for event in events] == ["a", "b"]


def test_every_failing_record_is_reported_with_its_index() -> None:
    records = [call("a"), call("b", currency="EUR"), call("c"), call("d", occurred_at="2020-01-01T00:00:00Z")]

    _, errors = validate_records(records, POLICY, now=NOW, watermark=NOW - timedelta(days=1))

    assert [(error.index, error.code) for error in errors] == [
        (1, RejectCode.CURRENCY_MISMATCH),
        (3, RejectCode.TOO_OLD),
    ]
    assert errors[0].problems[0].field == "currency"
