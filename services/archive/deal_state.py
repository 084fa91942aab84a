"""A deal's current state and its history, from its deal_* events: pure, no I/O.

CONTRACT section 1 and 3: a deal's events are ordered by (occurred_at, event_id); its customer and
lead source come from its (first) deal_created; it is open when that deal_created is known and its
latest deal event is neither won nor lost; its stage is that of its latest deal_created or
deal_stage_changed, its amount that of its latest amount-carrying event, its scope that of its latest
deal event. A history row holds the state after each event, so a win's row holds the deal's amount
at the win (the revenue it counts), whatever order the events arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

OPEN = "open"
WON = "won"
LOST = "lost"
UNKNOWN = "unknown"
"""The status of a deal whose deal_created is not known yet and whose latest event is not terminal."""

DEAL_TYPES = ("deal_created", "deal_stage_changed", "deal_won", "deal_lost")


@dataclass(frozen=True, slots=True)
class DealEventRow:
    """The fields of a deal event the deal's state depends on."""

    event_id: str
    type: str
    occurred_at: datetime
    manager_id: str
    team_id: str | None
    customer_id: str | None
    amount: Decimal | None
    stage: str | None
    lead_source: str | None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One event of a deal, with the deal's state right after it."""

    deal_id: str
    seq: int
    event_id: str
    type: str
    occurred_at: datetime
    stage: str | None
    amount: Decimal | None
    status: str
    stage_changed: bool
    amount_changed: bool


@dataclass(frozen=True, slots=True)
class DealState:
    """A deal's current state."""

    deal_id: str
    created_event_id: str | None
    created_at: datetime | None
    customer_id: str | None
    lead_source: str
    status: str
    stage: str | None
    amount: Decimal | None
    manager_id: str
    team_id: str | None
    last_event_at: datetime
    events: int


def deal_state(deal_id: str, events: Sequence[DealEventRow]) -> tuple[DealState, list[HistoryRow]]:
    """The deal's state and history from all its deal events (any order; at least one)."""
    ordered = sorted(events, key=lambda event: (event.occurred_at, event.event_id))
    created = next((event for event in ordered if event.type == "deal_created"), None)
    stage: str | None = None
    amount: Decimal | None = None
    seen_created = False
    history: list[HistoryRow] = []
    status = UNKNOWN
    for seq, event in enumerate(ordered):
        sets_stage = event.type in ("deal_created", "deal_stage_changed")
        if sets_stage:
            stage = event.stage
        if event.amount is not None:
            amount = event.amount
        if event.type == "deal_created":
            seen_created = True
        if event.type == "deal_won":
            status = WON
        elif event.type == "deal_lost":
            status = LOST
        else:
            status = OPEN if seen_created else UNKNOWN
        history.append(
            HistoryRow(
                deal_id=deal_id,
                seq=seq,
                event_id=event.event_id,
                type=event.type,
                occurred_at=event.occurred_at,
                stage=stage,
                amount=amount,
                status=status,
                stage_changed=sets_stage,
                amount_changed=event.amount is not None,
            )
        )
    latest = ordered[-1]
    if status in (OPEN, UNKNOWN):
        status = OPEN if created is not None else UNKNOWN
    state = DealState(
        deal_id=deal_id,
        created_event_id=created.event_id if created is not None else None,
        created_at=created.occurred_at if created is not None else None,
        customer_id=created.customer_id if created is not None else None,
        lead_source=(created.lead_source or "unknown") if created is not None else "unknown",
        status=status,
        stage=stage,
        amount=amount,
        manager_id=latest.manager_id,
        team_id=latest.team_id,
        last_event_at=latest.occurred_at,
        events=len(ordered),
    )
    return state, history
