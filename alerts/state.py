"""The pure state machine of one series (one rule, one scope): ok -> pending -> firing -> resolved.

``step(state, observation, condition, pending_for)`` returns the new state and the transition it
made, if any. No clock, no I/O: the caller passes the instant, whether the rule's active hours
hold, and the compared value (None when there is no value, e.g. a win rate without deals).

- ok / resolved -> pending when the value breaches (-> firing at once when ``for`` is 0);
- pending -> firing once it has breached for ``for`` (every observation in between breached);
- pending -> ok as soon as one observation does not breach;
- firing -> resolved only when the value recovers past the recovery threshold (hysteresis):
  a value between the two thresholds keeps it firing;
- outside active hours, or without a value, a series holds no alert: pending -> ok,
  firing -> resolved;
- a crossing condition (``crosses_above``/``crosses_below``) goes pending only once the series
  has been seen on the other side of the threshold (it is then "armed").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from alerts.conditions import breaches, is_crossing, recovered
from services.schemas.alerts import Condition

Status = Literal["ok", "pending", "firing", "resolved"]
Reason = Literal["breach", "for_elapsed", "no_breach", "recovered", "inactive", "no_value"]


class SeriesState(BaseModel):
    """What is kept per series between evaluations (persisted as JSON)."""

    model_config = ConfigDict(frozen=True)

    status: Status = "ok"
    since: datetime | None = None
    """When the series entered its status."""
    active_at: datetime | None = None
    """When the current episode began breaching (the alert's starts_at), while pending or firing."""
    armed: bool = False
    """Crossing conditions: seen on the non-breaching side."""
    value: Decimal | None = None
    """The last compared value."""
    evaluated_at: datetime | None = None


@dataclass(frozen=True)
class Observation:
    value: Decimal | None
    at: datetime
    active: bool = True


@dataclass(frozen=True)
class Transition:
    """A change of status, recorded in the history."""

    before: Status
    after: Status
    at: datetime
    value: Decimal | None
    reason: Reason


def step(
    state: SeriesState, observation: Observation, condition: Condition, pending_for: timedelta
) -> tuple[SeriesState, Transition | None]:
    """The series after one observation, and the transition it made (None when its status held)."""
    at = observation.at if state.evaluated_at is None else max(observation.at, state.evaluated_at)
    value = observation.value
    armed = state.armed
    if value is not None and not breaches(condition, value):
        armed = True
    base = state.model_copy(update={"armed": armed, "value": value, "evaluated_at": at})

    if value is None or not observation.active:
        reason: Reason = "inactive" if not observation.active else "no_value"
        if state.status == "pending":
            return _move(base, "ok", at, value, reason, active_at=None)
        if state.status == "firing":
            return _move(base, "resolved", at, value, reason, active_at=None)
        return base, None

    breaching = breaches(condition, value) and (not is_crossing(condition) or state.armed)
    if state.status in ("ok", "resolved"):
        if not breaching:
            return base, None
        if pending_for <= timedelta(0):
            return _move(base, "firing", at, value, "breach", active_at=at)
        return _move(base, "pending", at, value, "breach", active_at=at)
    if state.status == "pending":
        if not breaches(condition, value):
            return _move(base, "ok", at, value, "no_breach", active_at=None)
        assert state.active_at is not None
        if at - state.active_at >= pending_for:
            return _move(base, "firing", at, value, "for_elapsed", active_at=state.active_at)
        return base, None
    # firing
    if recovered(condition, value):
        return _move(base, "resolved", at, value, "recovered", active_at=None)
    return base, None


def _move(
    base: SeriesState,
    status: Status,
    at: datetime,
    value: Decimal | None,
    reason: Reason,
    *,
    active_at: datetime | None,
) -> tuple[SeriesState, Transition]:
    new = base.model_copy(update={"status": status, "since": at, "active_at": active_at})
    return new, Transition(before=base.status, after=status, at=at, value=value, reason=reason)
