"""How long an open deal has been in its stage and since its latest event (pure).

The stream worker indexes every open deal by these two instants (``RedisKeys.open_deals_by_stage_entry``
and ``open_deals_by_activity``, written in its atomic commit); the alerts worker's deal rules read the
indexes and describe a deal with ``deal_clock`` of its stored history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.kpis.contributions import DealEvent
from services.schemas.events import EventType

US_PER_S = 1_000_000
STAGE_SETTING = (EventType.DEAL_CREATED, EventType.DEAL_STAGE_CHANGED)
CLOSING = (EventType.DEAL_WON, EventType.DEAL_LOST)


@dataclass(frozen=True, slots=True)
class DealClock:
    """An open deal's stage, since when it is in it, its latest event and its scope (of that event)."""

    stage: str
    stage_since_us: int
    latest_us: int
    manager_id: str
    team_id: str | None


def deal_clock(history: Iterable[DealEvent]) -> DealClock | None:
    """The clock of an open deal (CONTRACT section 3: deal_created known, latest deal event neither won
    nor lost), None otherwise. A stage change to the stage the deal is already in does not restart it."""
    events = sorted(history, key=lambda e: e.order)
    if not events or events[-1].type in CLOSING or not any(e.type == EventType.DEAL_CREATED for e in events):
        return None
    stage: str | None = None
    since_us = 0
    for event in events:
        if event.type in STAGE_SETTING and event.stage is not None and event.stage != stage:
            stage, since_us = event.stage, event.t_us
    if stage is None:
        return None
    latest = events[-1]
    return DealClock(stage, since_us, latest.t_us, latest.manager_id, latest.team_id)


def score_s(t_us: int) -> str:
    """An instant as a sorted-set score: epoch seconds, exact to the microsecond."""
    seconds, micros = divmod(t_us, US_PER_S)
    return f"{seconds}.{micros:06d}"
