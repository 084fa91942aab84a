"""validate_values: many raw values at once, each result exactly the per-record one.

The per-record way is ``validate_payload(decode_json(raw), policy)``. Results are compared
strictly, beyond ``==``: the type and repr of every field value (``Decimal("12.50")`` is not
``Decimal("12.5")``), the fields set, and every problem of a rejection.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from services.schemas import events
from services.schemas.events import (
    EVENT_MODELS,
    CrmEvent,
    EventRejected,
    EventType,
    Rejection,
    ValidationPolicy,
    decode_json,
    validate_payload,
    validate_values,
)
from services.settings import BusinessSettings
from services.simulation import Simulation, SimulationConfig

BUSINESS = BusinessSettings(currency="EUR")
POLICY = ValidationPolicy.from_settings(BUSINESS)
START = datetime(2024, 3, 4, tzinfo=UTC)


def one_by_one(raw: bytes) -> CrmEvent | Rejection:
    try:
        return validate_payload(decode_json(raw), POLICY)
    except EventRejected as rejected:
        return rejected.rejection


def exactly(result: CrmEvent | Rejection) -> tuple[Any, ...]:
    """Everything about a result that could tell two apart."""
    if isinstance(result, Rejection):
        problems = [(p.field, type(p.value), repr(p.value), p.message) for p in result.problems]
        return ("rejection", result.code, problems)
    values = [(name, type(value), repr(value)) for name, value in result.__dict__.items()]
    return (type(result), values, sorted(result.model_fields_set), result.__pydantic_extra__)


def assert_same_as_one_by_one(raws: list[bytes]) -> list[CrmEvent | Rejection]:
    results = validate_values(raws, POLICY)
    expected = [one_by_one(raw) for raw in raws]
    assert len(results) == len(expected)
    for raw, result, wanted in zip(raws, results, expected, strict=True):
        assert result == wanted, raw
        assert exactly(result) == exactly(wanted), raw
    return results


# -- JSON text with exact number tokens, duplicated keys and any spacing ---------------------------


@dataclass(frozen=True)
class Token:
    """JSON text put in as it is: ``12.50``, ``1e3``, ``NaN``, ``"\\ud800"``."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as key-value pairs, so a key can repeat."""

    pairs: tuple[tuple[str, Any], ...]


def encode(value: Any, space: str, ascii_only: bool) -> str:
    if isinstance(value, Token):
        return value.text
    if isinstance(value, Obj):
        members = (
            f"{json.dumps(key, ensure_ascii=ascii_only)}{space}:{space}{encode(item, space, ascii_only)}"
            for key, item in value.pairs
        )
        return "{" + f",{space}".join(members) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(encode(item, space, ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


numbers = st.sampled_from(
    ["12.50", "12.5", "0.1", "1e3", "1E+3", "2.5e-1", "-0", "-0.0", "0.00001", "1.23456", "120.0", "1e400", "-1"]
).map(Token)
big_ints = st.integers(min_value=2**63 - 2, max_value=2**70) | st.integers(max_value=-(2**63) + 2, min_value=-(2**70))
unsafe_tokens = st.sampled_from(["NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udc00x"', '"\\u0000"']).map(Token)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    numbers,
    unsafe_tokens,
    st.text(max_size=12),
)
any_json = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(st.text(max_size=6), inner), max_size=3).map(lambda pairs: Obj(tuple(pairs)))
    ),
    max_leaves=6,
)
texts = st.text(min_size=1, max_size=16) | st.sampled_from(["", "x" * 128, "y" * 129, "M\u00fcller", "\U0001f600"])


def timestamps() -> st.SearchStrategy[Any]:
    moments = st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.none() | st.timezones()
    )
    return st.one_of(
        st.tuples(moments, st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"])).map(
            lambda pair: pair[0].isoformat(timespec=pair[1])
        ),
        st.sampled_from(
            [
                "2026-06-16T09:00:06.118Z",
                "2026-06-16T09:00:06.123456789+02:00",
                "2026-06-16 09:00:06Z",
                "2026-06-16",
                "2026-02-30T09:00:00Z",
                "not a time",
            ]
        ),
        st.integers(min_value=0, max_value=2**40),
        numbers,
    )


FITTING: dict[str, st.SearchStrategy[Any]] = {
    "occurred_at": st.sampled_from(["2026-06-16T09:00:06.118+00:00", "2026-06-16T11:00:06Z"]),
    "amount": st.one_of(
        st.sampled_from(["1250.00", "99.9999", "7", "1e3", "0.5"]),
        st.integers(0, 10**6),
        st.sampled_from(["1250.00", "12.5", "1e3", "0.1", "2.50E+2", "7.0"]).map(Token),
        st.decimals(min_value=0, max_value=10**6, places=4).map(lambda amount: Token(str(amount))),
    ),
    "duration_s": st.integers(0, 10**4),
    "stage": st.sampled_from([*POLICY.open_stages, "won"]),
    "currency": st.sampled_from(["EUR", "EUR", "USD"]),
    "type": st.sampled_from([event_type.value for event_type in EventType]),
}
"""Values a field takes in a well-formed event (an unknown stage or a foreign currency at times)."""

ANY_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "event_id": texts,
    "manager_id": texts,
    "occurred_at": timestamps(),
    "amount": st.one_of(
        numbers,
        st.sampled_from(["12.50", "1200", "1e3", "0.00001", "-5", "abc", "NaN", "Infinity", " 12", "1_000"]),
        st.integers(min_value=-5, max_value=10**13),
        big_ints,
        st.decimals(min_value=0, max_value=10**12, places=4).map(str),
        st.decimals(min_value=0, max_value=10**12, places=4).map(lambda amount: Token(str(amount))),
        st.booleans(),
    ),
    "duration_s": st.one_of(
        st.integers(min_value=-5, max_value=10**5), big_ints, numbers, st.just("120"), st.booleans()
    ),
    "stage": st.sampled_from([*POLICY.open_stages, "won", "lost", "discovery", "New", ""]) | st.integers(0, 3),
    "currency": st.sampled_from(["EUR", "USD", "eur", ""]) | st.integers(0, 3),
}
"""Values for a field of a sloppy event: fitting or not."""


def fitting(name: str) -> st.SearchStrategy[Any]:
    return FITTING.get(name, st.text(min_size=1, max_size=16))


def any_value(name: str) -> st.SearchStrategy[Any]:
    return ANY_VALUE.get(name, texts | st.integers(0, 3) | scalars)


extras = st.one_of(
    st.booleans(), st.integers(), big_ints, st.floats(allow_nan=False, allow_infinity=False), numbers, unsafe_tokens
)
"""Values of extra fields in a well-formed event: ignored, but a float changes the decoder per
record and NaN or Infinity makes it invalid JSON."""


@st.composite
def event_objects(draw: st.DrawFn) -> Obj:
    """An event of any type: either valid, or sloppy (odd values, nulls, NaN, unknown types)."""
    sloppy = draw(st.booleans())
    event_type = draw(st.sampled_from(list(EventType)))
    fields = EVENT_MODELS[event_type].model_fields
    pairs: list[tuple[str, Any]] = [("type", event_type.value)]
    if sloppy and draw(st.integers(0, 5)) == 0:
        pairs = [("type", draw(st.sampled_from(["Call", "email_sent", "", 1, None, ["call"]])))]
    for name, info in fields.items():
        if name != "type" and draw(st.floats(0, 1)) < (0.97 if info.is_required() else 0.5):
            odd = sloppy and draw(st.integers(0, 3)) == 0
            pairs.append((name, draw(any_value(name) if odd else fitting(name))))
    pairs += draw(st.lists(st.tuples(st.text(max_size=8), any_json if sloppy else extras), max_size=3))
    if draw(st.integers(0, 3)) == 0:  # a repeated key: the last one counts
        name = draw(st.sampled_from(list(fields)))
        pairs.append((name, draw(fitting(name) | any_value(name) if sloppy else fitting(name))))
    if sloppy and draw(st.integers(0, 3)) == 0:
        pairs = [(key, None) if draw(st.integers(0, 4)) == 0 else (key, value) for key, value in pairs]
    return Obj(tuple(draw(st.permutations(pairs))))


@st.composite
def raw_values(draw: st.DrawFn) -> bytes:
    """A record value: mostly an encoded event, sometimes broken on purpose."""
    event = draw(event_objects())
    text = encode(event, draw(st.sampled_from(["", " ", "\n\t"])), draw(st.booleans()))
    raw = text.encode()
    kind = draw(st.sampled_from(["event"] * 14 + ["truncated", "byte", "latin-1", "array", "double", "junk", "other"]))
    if kind == "truncated":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif kind == "byte":
        position = draw(st.integers(0, len(raw)))
        raw = raw[:position] + draw(st.binary(min_size=1, max_size=2)) + raw[position + draw(st.integers(0, 1)) :]
    elif kind == "latin-1":
        raw = raw.replace(b'"', '"\u00fc'.encode("latin-1"), 1) if draw(st.booleans()) else b"\xef\xbb\xbf" + raw
    elif kind == "array":
        raw = b"[" + raw + b"]"
    elif kind == "double":
        raw = json.dumps(text).encode()
    elif kind == "junk":
        raw = raw + draw(st.sampled_from([b" x", b",", b"}", b" ", b"\n{}"]))
    elif kind == "other":
        raw = draw(
            st.sampled_from([b"", b"{}", b"[]", b"null", b"1", b"1.5", b'"call"', b"NaN", b"[1,2]", b"{,}"])
            | st.binary(max_size=20)
            | any_json.map(lambda value: encode(value, "", True).encode())
        )
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(raw_values(), min_size=1, max_size=12))
def test_every_result_is_the_per_record_one(raws: list[bytes]) -> None:
    assert_same_as_one_by_one(raws)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"deal_created","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","customer_id":"c","amount":12.50,"stage":"new"}',
        b'{"type":"deal_won","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","amount":1e3}',
        b'{"type":"deal_won","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","amount":"7","amount":0.1}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","note":NaN}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","n":[-Infinity]}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","team_id":null}',
        b'{"type":"deal_created","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","customer_id":"c","amount":"5","stage":null,"lead_source":null,"x":null}',
        b'{"type":"deal_created","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","customer_id":"c","amount":"5","stage":null,"currency":null,"x":null}',
        b'{"type":"deal_created","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","customer_id":"c","amount":"5","stage":null,"stage":"new"}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","x":1.5}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","type":"meeting"}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","outcome":"\\ud800"}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m","duration_s":1e2}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"duration_s":100000000000000000000000}',
        b'{"type":"deal_created","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","customer_id":"c","amount":"1.50"}',
        b'{"type":"deal_stage_changed","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"deal_id":"d","stage":"won"}',
        b'{"type":"proposal_sent","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m",'
        b'"currency":"USD"}',
        b'{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"M\xfcller"}',
        b'[{"type":"call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m"}]',
        b'{"type":"Call","event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m"}',
        b'{"event_id":"e","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m"}',
    ],
)
def test_each_pitfall_of_the_batch_decoder(raw: bytes) -> None:
    """Where pydantic-core's decoding differs from the per-record one, or checks follow it: floats
    (the amount's exact digits), NaN and Infinity (not JSON), nulls (absent per record), repeated
    keys, lone surrogates, a default or unknown stage, a foreign currency, and so on."""
    clean = b'{"type":"call","event_id":"c","occurred_at":"2026-06-16T09:00:06Z","manager_id":"m"}'
    assert_same_as_one_by_one([clean, raw, clean])


def test_a_field_that_takes_null_defaults_to_none() -> None:
    """What lets the batch take a null as absent: either way, the field's value is None."""
    for model in EVENT_MODELS.values():
        for name, info in model.model_fields.items():
            annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            try:
                TypeAdapter(annotation).validate_python(None)
            except ValidationError:
                continue
            assert not info.is_required() and info.default is None, (model.__name__, name)


# -- the simulator's records -------------------------------------------------------------------


def simulated_values(count: int, **faults: float) -> list[bytes]:
    config = SimulationConfig.from_business(BUSINESS, managers=8, teams=2, **faults)
    return [record.value for record in Simulation(config, seed=1).records(START, count=count)]


def test_simulated_records_give_the_per_record_results() -> None:
    raws = simulated_values(5_000, duplicates=0.03, out_of_order=0.08, malformed=0.05)
    results = assert_same_as_one_by_one(raws)
    codes = Counter(str(result.code) for result in results if isinstance(result, Rejection))
    assert {"invalid_json", "schema_violation", "unknown_stage", "currency_mismatch"} <= codes.keys()
    assert sum(not isinstance(result, Rejection) for result in results) > 4_500


@pytest.mark.parametrize("nulls", [b"", b',"currency":null,"note":null'])
def test_valid_records_are_not_validated_one_by_one(monkeypatch: pytest.MonkeyPatch, nulls: bytes) -> None:
    """The point of the batch: plain valid records never take the per-record way (nulls or not)."""
    raws = [raw[:-1] + nulls + b"}" for raw in simulated_values(2_000)]

    def refuse(raw: bytes) -> Any:
        raise AssertionError(f"decoded one by one: {raw!r}")

    monkeypatch.setattr(events, "decode_json", refuse)
    results = validate_values(raws, POLICY)
    monkeypatch.undo()
    assert [exactly(result) for result in results] == [exactly(one_by_one(raw)) for raw in raws]
