"""Test-data faults layered on valid events: duplicates, late delivery and malformed records.

Every produced :class:`SimRecord` says what a correct consumer must do with it (``expected``):
``ok`` (accept), ``duplicate`` (ignore: its ``event_id`` was accepted before) or the contract's
rejection code. The rules these expectations rely on (CONTRACT section 1):

- A duplicate is a byte-identical re-send of a record already produced and accepted.
- A malformed record reuses the ``event_id`` of an upcoming valid event, as a CRM would send
  a broken record and then its correction: a rejected record claims nothing, so the
  correction is still ``ok``.
- ``too_old`` records are dated far before the first simulated event and are only produced
  after a valid record with the same Kafka key, so the watermark is set whatever the
  partitioning. ``in_future`` records are dated decades after their template.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from services.schemas.events import RejectCode

Expectation = Literal[
    "ok", "duplicate", "invalid_json", "schema_violation", "unknown_stage", "currency_mismatch", "in_future", "too_old"
]
REJECT_CODES: tuple[str, ...] = tuple(code.value for code in RejectCode)

TOO_OLD_YEARS_DAYS = 5 * 365 + 2
"""How far before the earliest simulated event ``too_old`` records are dated (5 years)."""
IN_FUTURE_DAYS = 30 * 365
RECENT_FOR_DUPLICATES = 1024
TERMINAL_TYPES = frozenset({"deal_won", "deal_lost"})


@dataclass(slots=True)
class SimRecord:
    """One record as sent to a sink, and what a correct consumer does with it.

    Not frozen only because frozen dataclasses are slow to build; treat it as immutable.
    """

    key: bytes | None
    value: bytes
    expected: Expectation
    variant: str = ""
    """For malformed records: which rule it breaks, e.g. ``nan_literal``."""
    out_of_order: bool = False
    """Delivered after records of later events."""

    @property
    def is_valid(self) -> bool:
        return self.expected in ("ok", "duplicate")


def kafka_key(event: dict[str, Any]) -> bytes:
    """The contract's Kafka key: ``deal_id`` when present, else ``manager_id``."""
    return str(event.get("deal_id") or event["manager_id"]).encode()


@dataclass(frozen=True)
class FaultRates:
    """Fractions of produced records that are duplicates, late, or malformed."""

    duplicates: float = 0.0
    out_of_order: float = 0.0
    malformed: float = 0.0


@dataclass
class _Held:
    record: SimRecord
    event: dict[str, Any]
    held_at: int
    release_at: int | None  # emission count, for activities and terminal deal events
    deal_id: str | None  # wait for a later event of this deal
    until_closed: bool
    seq: int = 0


class _HeldRecords:
    """Records held back for late delivery, indexed by what releases them."""

    def __init__(self) -> None:
        self._all: dict[int, _Held] = {}
        self._timed: list[tuple[int, int, _Held]] = []
        self._by_deal: dict[str, list[_Held]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._all)

    def add(self, entry: _Held) -> None:
        self._seq += 1
        entry.seq = self._seq
        self._all[entry.seq] = entry
        if entry.release_at is not None:
            heapq.heappush(self._timed, (entry.release_at, entry.seq, entry))
        elif entry.deal_id is not None:
            self._by_deal.setdefault(entry.deal_id, []).append(entry)

    def released_by(self, event: dict[str, Any] | None, emitted: int) -> list[_Held]:
        """Entries due after ``emitted`` records, or waiting for this event of their deal."""
        ready: list[_Held] = []
        while self._timed and self._timed[0][0] <= emitted:
            ready.append(heapq.heappop(self._timed)[2])
        if event is not None and event["type"].startswith("deal_") and event["deal_id"] in self._by_deal:
            closing = event["type"] in TERMINAL_TYPES
            waiting = self._by_deal.pop(event["deal_id"])
            ready += [entry for entry in waiting if closing or not entry.until_closed]
            until_closed = [entry for entry in waiting if entry.until_closed and not closing]
            if until_closed:
                self._by_deal[event["deal_id"]] = until_closed
        for entry in ready:
            del self._all[entry.seq]
        return ready

    def drain(self) -> list[_Held]:
        """Everything still held, in the order it was held."""
        entries = list(self._all.values())
        self._all.clear()
        self._timed.clear()
        self._by_deal.clear()
        return entries


class MalformedRecords:
    """Builds raw records that each break one contract rule, cycling through all of them."""

    def __init__(self, rng: random.Random, *, stages: tuple[str, ...], currency: str, too_old_before: datetime) -> None:
        self._rng = rng
        self._stages = stages
        self._currency = currency
        self._too_old_before = too_old_before
        self._variants: list[tuple[str, Expectation, Callable[[dict[str, Any]], bytes]]] = [
            ("not_utf8", "invalid_json", self._not_utf8),
            ("truncated", "invalid_json", self._truncated),
            ("nan_literal", "invalid_json", self._nan_literal),
            ("infinity_literal", "invalid_json", self._infinity_literal),
            ("double_encoded", "invalid_json", self._double_encoded),
            ("missing_field", "schema_violation", self._missing_field),
            ("unknown_type", "schema_violation", self._unknown_type),
            ("naive_occurred_at", "schema_violation", self._naive_occurred_at),
            ("negative_amount", "schema_violation", self._negative_amount),
            ("bad_duration", "schema_violation", self._bad_duration),
            ("wrong_json_type", "schema_violation", self._wrong_json_type),
            ("event_id_too_long", "schema_violation", self._event_id_too_long),
            ("terminal_stage", "unknown_stage", self._terminal_stage),
            ("unconfigured_stage", "unknown_stage", self._unconfigured_stage),
            ("foreign_currency", "currency_mismatch", self._foreign_currency),
            ("far_future", "in_future", self._far_future),
            ("ancient", "too_old", self._ancient),
        ]
        self._next = 0

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self._variants)

    def build(self, template: dict[str, Any], *, key: bytes, too_old_key: bytes | None) -> SimRecord:
        """The next malformed record, derived from a valid event; ``too_old`` needs an accepted key."""
        name, expected, make = self._variants[self._next]
        if expected == "too_old" and too_old_key is None:
            name, expected, make = self._variants[(self._next + 1) % len(self._variants)]
        else:
            self._next = (self._next + 1) % len(self._variants)
        if expected == "too_old" and too_old_key is not None:
            key = too_old_key
        return SimRecord(key=key, value=make(dict(template)), expected=expected, variant=name)

    # -- invalid_json --
    def _not_utf8(self, event: dict[str, Any]) -> bytes:
        # A Latin-1 encoded name: the classic mis-encoded export.
        raw = orjson.dumps(event)
        quoted = orjson.dumps(event["manager_id"])
        return raw.replace(quoted, quoted[:-1] + " M\xfcller".encode("latin-1") + b'"', 1)

    def _truncated(self, event: dict[str, Any]) -> bytes:
        raw = orjson.dumps(event)
        return raw[: self._rng.randrange(1, len(raw) - 1)]

    def _nan_literal(self, event: dict[str, Any]) -> bytes:
        field = "amount" if "amount" in event else "duration_s"
        return json.dumps({**event, field: float("nan")}).encode()

    def _infinity_literal(self, event: dict[str, Any]) -> bytes:
        return json.dumps({**event, "duration_s": float("inf")}).encode()

    def _double_encoded(self, event: dict[str, Any]) -> bytes:
        return orjson.dumps(orjson.dumps(event).decode())

    # -- schema_violation --
    def _missing_field(self, event: dict[str, Any]) -> bytes:
        required = ["event_id", "type", "occurred_at", "manager_id"]
        if event["type"].startswith("deal_"):
            required.append("deal_id")
        required += {"deal_created": ["customer_id", "amount"], "deal_stage_changed": ["stage"]}.get(event["type"], [])
        del event[self._rng.choice(required)]
        return orjson.dumps(event)

    def _unknown_type(self, event: dict[str, Any]) -> bytes:
        event["type"] = self._rng.choice(["deal_updated", "email_sent", "Call", "task_completed"])
        return orjson.dumps(event)

    def _naive_occurred_at(self, event: dict[str, Any]) -> bytes:
        moment = datetime.fromisoformat(event["occurred_at"])
        event["occurred_at"] = moment.replace(tzinfo=None).isoformat(timespec="milliseconds")
        return orjson.dumps(event)

    def _negative_amount(self, event: dict[str, Any]) -> bytes:
        if event["type"] not in ("deal_created", "deal_stage_changed", "deal_won"):
            event = {**_envelope(event), "type": "deal_won", "deal_id": event.get("deal_id") or "deal-unknown"}
        event["amount"] = "-" + str(event.get("amount") or "1250.00")
        return orjson.dumps(event)

    def _bad_duration(self, event: dict[str, Any]) -> bytes:
        if event["type"] not in ("call", "meeting"):
            event = {**_envelope(event), "type": "call", "outcome": "connected"}
        event["duration_s"] = self._rng.choice([-30, 93.5, "120", True])
        return orjson.dumps(event) if not isinstance(event["duration_s"], float) else json.dumps(event).encode()

    def _wrong_json_type(self, event: dict[str, Any]) -> bytes:
        event["manager_id"] = int("".join(char for char in event["manager_id"] if char.isdigit()) or "0")
        return orjson.dumps(event)

    def _event_id_too_long(self, event: dict[str, Any]) -> bytes:
        event["event_id"] = (event["event_id"] + "-") * (129 // (len(event["event_id"]) + 1) + 1)
        return orjson.dumps(event)

    # -- unknown_stage --
    def _terminal_stage(self, event: dict[str, Any]) -> bytes:
        return orjson.dumps(self._stage_event(event, self._rng.choice(["won", "lost"])))

    def _unconfigured_stage(self, event: dict[str, Any]) -> bytes:
        stage = self._rng.choice(["discovery", "closing", "Qualified", "demo"])
        while stage in self._stages:
            stage += "_x"
        return orjson.dumps(self._stage_event(event, stage))

    @staticmethod
    def _stage_event(event: dict[str, Any], stage: str) -> dict[str, Any]:
        if event["type"] in ("deal_created", "deal_stage_changed"):
            return {**event, "stage": stage}
        deal_id = event.get("deal_id") or "deal-unknown"
        return {**_envelope(event), "type": "deal_stage_changed", "deal_id": deal_id, "stage": stage}

    # -- currency_mismatch --
    def _foreign_currency(self, event: dict[str, Any]) -> bytes:
        choices = [code for code in ("EUR", "GBP", "usd", "JPY", "USD") if code != self._currency]
        event["currency"] = self._rng.choice(choices)
        return orjson.dumps(event)

    # -- time checks --
    def _far_future(self, event: dict[str, Any]) -> bytes:
        moment = datetime.fromisoformat(event["occurred_at"]) + timedelta(days=IN_FUTURE_DAYS)
        event["occurred_at"] = moment.isoformat(timespec="milliseconds")
        return orjson.dumps(event)

    def _ancient(self, event: dict[str, Any]) -> bytes:
        offset = datetime.fromisoformat(event["occurred_at"]).tzinfo
        moment = self._too_old_before - timedelta(days=self._rng.randrange(366), seconds=self._rng.randrange(86_400))
        event["occurred_at"] = moment.astimezone(offset).isoformat(timespec="milliseconds")
        return orjson.dumps(event)


def _envelope(event: dict[str, Any]) -> dict[str, Any]:
    return {name: event[name] for name in ("event_id", "occurred_at", "manager_id", "team_id") if name in event}


class FaultInjector:
    """Turns valid events (in event-time order) into records with duplicates, late and bad ones.

    Late delivery: an activity or a deal's final event is held back for a few records; an
    earlier deal event is held until a later event of its deal is sent, sometimes until the
    deal is won or lost (so a ``deal_won`` can arrive before its ``deal_created``).
    """

    def __init__(self, rates: FaultRates, rng: random.Random, malformed: MalformedRecords) -> None:
        self._rates = rates
        self._rng = rng
        self._malformed = malformed

    def records(self, events: Iterator[dict[str, Any]], *, count: int | None = None) -> Iterator[SimRecord]:
        """Records until the events run out or ``count`` records were produced (faults included)."""
        rng, rates = self._rng, self._rates
        duplicate_below = rates.duplicates
        malformed_below = rates.duplicates + rates.malformed
        late_share = rates.out_of_order
        lookahead: list[dict[str, Any]] = []
        recent: deque[SimRecord] = deque(maxlen=RECENT_FOR_DUPLICATES)
        held = _HeldRecords()
        accepted_key: bytes | None = None
        emitted = 0
        outgoing: deque[tuple[SimRecord, dict[str, Any] | None]]

        while count is None or emitted + len(held) < count:
            draw = rng.random() if malformed_below else 1.0
            if draw < duplicate_below and recent:
                original = rng.choice(recent)
                outgoing = deque([(SimRecord(original.key, original.value, "duplicate"), None)])
            else:
                event = lookahead.pop() if lookahead else next(events, None)
                if event is None:
                    break
                if draw < malformed_below:
                    lookahead.append(event)  # its correction is still to come
                    bad = self._malformed.build(event, key=kafka_key(event), too_old_key=accepted_key)
                    outgoing = deque([(bad, None)])
                else:
                    record = SimRecord(kafka_key(event), orjson.dumps(event), "ok")
                    if late_share and rng.random() < late_share:
                        held.add(self._hold(record, event, emitted))
                        continue
                    if not held:  # the common case, kept fast
                        yield record
                        emitted += 1
                        accepted_key = record.key
                        if duplicate_below:
                            recent.append(record)
                        continue
                    outgoing = deque([(record, event)])
            # Emit, then whatever each emission releases (which may release more in turn).
            while outgoing:
                record, sent_event = outgoing.popleft()
                yield record
                emitted += 1
                if record.expected == "ok":
                    recent.append(record)
                    accepted_key = record.key
                for entry in held.released_by(sent_event, emitted):
                    outgoing.append((replace(entry.record, out_of_order=emitted > entry.held_at), entry.event))
        for entry in held.drain():
            yield replace(entry.record, out_of_order=emitted > entry.held_at)
            emitted += 1

    def _hold(self, record: SimRecord, event: dict[str, Any], emitted: int) -> _Held:
        if event["type"].startswith("deal_") and event["type"] not in TERMINAL_TYPES:
            return _Held(record, event, emitted, None, event["deal_id"], until_closed=self._rng.random() < 0.3)
        delay = 1 + min(200, int(self._rng.expovariate(1 / 8)))
        return _Held(record, event, emitted, emitted + delay, None, until_closed=False)
