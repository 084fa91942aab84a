"""Event validation: every rule and reason code of CONTRACT section 1, in contract order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.schemas.events import (
    DealCreatedEvent,
    EventRejected,
    RejectCode,
    ValidationPolicy,
    canonical_json,
    decode_json,
    validate_event,
)
from services.schemas.export import event_json_schema
from services.settings import BusinessSettings

POLICY = ValidationPolicy.from_settings(BusinessSettings(currency="EUR"))
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def make_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "deal_created",
        "occurred_at": "2026-11-27T09:30:00+01:00",
        "manager_id": "mgr-1",
        "deal_id": "d-1",
        "customer_id": "c-1",
        "amount": "1200.50",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def reject_code(raw: bytes | dict[str, Any], watermark: datetime | None = None) -> tuple[RejectCode, str | None]:
    with pytest.raises(EventRejected) as caught:
        validate_event(raw, POLICY, now=NOW, watermark=watermark)
    return caught.value.rejection.code, caught.value.rejection.field


def test_valid_deal_created_gets_defaults() -> None:
    event = validate_event(make_event(), POLICY, now=NOW, watermark=None)
    assert isinstance(event, DealCreatedEvent)
    assert event.stage == "new"
    assert event.lead_source == "unknown"
    assert event.amount == Decimal("1200.50")


@pytest.mark.parametrize("amount", [12.25, "12.25", 1225 / 100])
def test_amount_as_number_or_string_is_exact(amount: object) -> None:
    raw = json.dumps(make_event(amount=amount)).encode()
    event = validate_event(raw, POLICY, now=NOW, watermark=None)
    assert event.amount == Decimal("12.25")  # type: ignore[union-attr]


def test_null_counts_as_absent_and_extra_fields_are_ignored() -> None:
    raw = json.dumps(make_event(team_id=None, stage=None, colour="blue")).encode()
    event = validate_event(raw, POLICY, now=NOW, watermark=None)
    assert event.team_id is None and event.stage == "new"  # type: ignore[union-attr]
    assert b"colour" not in canonical_json(event)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"\xff\xfe not utf-8", None),
        (b'{"event_id": ', None),
        (b'{"amount": NaN}', None),
        (b'{"amount": Infinity}', None),
        (b"[1, 2]", None),
        (b'"just a string"', None),
    ],
)
def test_invalid_json(raw: bytes, field: str | None) -> None:
    assert reject_code(raw) == (RejectCode.INVALID_JSON, field)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (make_event(event_id=...), "event_id"),
        (make_event(type=...), "type"),
        (make_event(type="email_sent"), "type"),
        (make_event(occurred_at="2026-11-27T09:30:00"), "occurred_at"),
        (make_event(occurred_at=1764236000), "occurred_at"),
        (make_event(occurred_at="yesterday"), "occurred_at"),
        (make_event(amount=-1), "amount"),
        (make_event(amount="-0.01"), "amount"),
        (make_event(amount=True), "amount"),
        (make_event(amount="12.34567"), "amount"),
        (make_event(amount=...), "amount"),
        (make_event(customer_id=...), "customer_id"),
        (make_event(deal_id=...), "deal_id"),
        (make_event(event_id=""), "event_id"),
        (make_event(event_id="x" * 129), "event_id"),
        (make_event(manager_id="x" * 129), "manager_id"),
        (make_event(manager_id=7), "manager_id"),
        (make_event(type="call", duration_s=1.5), "duration_s"),
        (make_event(type="call", duration_s="60"), "duration_s"),
        (make_event(type="call", duration_s=-1), "duration_s"),
        (make_event(type="deal_stage_changed"), "stage"),
    ],
)
def test_schema_violation(event: dict[str, Any], field: str) -> None:
    assert reject_code(json.dumps(event).encode()) == (RejectCode.SCHEMA_VIOLATION, field)


def test_lengths_at_the_limits_are_accepted() -> None:
    validate_event(make_event(event_id="x" * 128, manager_id="m" * 128), POLICY, now=NOW, watermark=None)


@pytest.mark.parametrize("stage", ["won", "lost", "Qualified", "unknown"])
def test_unknown_stage(stage: str) -> None:
    assert reject_code(make_event(stage=stage)) == (RejectCode.UNKNOWN_STAGE, "stage")
    assert reject_code(make_event(type="deal_stage_changed", stage=stage)) == (RejectCode.UNKNOWN_STAGE, "stage")


def test_currency_mismatch_and_match() -> None:
    assert reject_code(make_event(currency="USD")) == (RejectCode.CURRENCY_MISMATCH, "currency")
    validate_event(make_event(currency="EUR"), POLICY, now=NOW, watermark=None)


def test_in_future_is_24_hours_after_the_wall_clock() -> None:
    edge = (NOW + timedelta(hours=24)).isoformat()
    validate_event(make_event(occurred_at=edge), POLICY, now=NOW, watermark=None)
    later = (NOW + timedelta(hours=24, microseconds=1)).isoformat()
    assert reject_code(make_event(occurred_at=later)) == (RejectCode.IN_FUTURE, "occurred_at")


def test_too_old_is_relative_to_the_watermark() -> None:
    watermark = datetime(2026, 11, 1, tzinfo=UTC)
    edge = (watermark - timedelta(days=730)).isoformat()
    validate_event(make_event(occurred_at=edge), POLICY, now=NOW, watermark=watermark)
    older = (watermark - timedelta(days=730, microseconds=1)).isoformat()
    assert reject_code(make_event(occurred_at=older), watermark) == (RejectCode.TOO_OLD, "occurred_at")
    # Without a watermark (nothing accepted yet) nothing is too old.
    validate_event(make_event(occurred_at=older), POLICY, now=NOW, watermark=None)


def test_first_failure_wins_in_contract_order() -> None:
    # Bad stage, wrong currency and far future at once: unknown_stage is checked first.
    event = make_event(stage="won", currency="USD", occurred_at="2030-01-01T00:00:00Z")
    assert reject_code(event)[0] is RejectCode.UNKNOWN_STAGE
    assert (
        reject_code(make_event(currency="USD", occurred_at="2030-01-01T00:00:00Z"))[0] is RejectCode.CURRENCY_MISMATCH
    )
    # A schema problem beats everything after it.
    assert reject_code(make_event(amount=-5, stage="won"))[0] is RejectCode.SCHEMA_VIOLATION


def test_rejection_names_field_value_and_reason() -> None:
    with pytest.raises(EventRejected) as caught:
        validate_event(make_event(amount=-3), POLICY, now=NOW, watermark=None)
    problem = caught.value.rejection.problems[0]
    assert (problem.field, problem.value) == ("amount", -3)
    assert ">= 0" in problem.message


def test_json_schema_names_every_event_type() -> None:
    schema = event_json_schema()
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == {
        "call",
        "meeting",
        "proposal_sent",
        "deal_created",
        "deal_stage_changed",
        "deal_won",
        "deal_lost",
    }


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(st.dictionaries(st.text(max_size=10), _scalars, max_size=8))
def test_fast_decoding_equals_the_exact_decoder(event: dict[str, Any]) -> None:
    raw = json.dumps(event).encode()
    exact = json.loads(raw, parse_float=Decimal)
    decoded = decode_json(raw)
    assert decoded == exact
    assert [type(v) for v in decoded.values()] == [type(v) for v in exact.values()]
