"""The series state machine against a simple model, and its invariants (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.state import Observation, SeriesState, step
from services.schemas.alerts import Condition

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ALLOWED = {
    ("ok", "pending"),
    ("ok", "firing"),
    ("resolved", "pending"),
    ("resolved", "firing"),
    ("pending", "ok"),
    ("pending", "firing"),
    ("firing", "resolved"),
}

observations = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=20),  # seconds since the previous observation
        st.one_of(st.none(), st.integers(min_value=0, max_value=10)),  # value (None = no value)
        st.booleans() | st.just(True),  # within active hours (mostly)
    ),
    max_size=40,
)


def model(
    obs: list[tuple[int, int | None, bool]], threshold: int, recovery: int, pending_s: int, crossing: bool
) -> list[str]:
    """The statuses after each observation, for ``value > threshold``, by the plainest reading of the spec."""
    statuses: list[str] = []
    status, breach_since, seen_below, clock = "ok", 0, False, 0
    for gap, value, active in obs:
        clock += gap
        if value is None or not active:
            status = {"pending": "ok", "firing": "resolved"}.get(status, status)
        elif status == "firing":
            if value <= recovery:
                status = "resolved"
        elif value > threshold and (seen_below or not crossing):
            if status != "pending":
                breach_since = clock
            status = "firing" if clock - breach_since >= pending_s else "pending"
        elif status == "pending":
            status = "ok"
        if value is not None and value <= threshold:
            seen_below = True
        statuses.append(status)
    return statuses


@settings(max_examples=400)
@given(
    obs=observations,
    threshold=st.integers(min_value=2, max_value=8),
    band=st.integers(min_value=0, max_value=2),
    pending_s=st.sampled_from([0, 5, 30]),
    crossing=st.booleans(),
)
def test_matches_the_model_and_keeps_its_invariants(
    obs: list[tuple[int, int | None, bool]], threshold: int, band: int, pending_s: int, crossing: bool
) -> None:
    recovery = threshold - band
    condition = Condition(
        op="crosses_above" if crossing else ">", threshold=Decimal(threshold), recovery_threshold=Decimal(recovery)
    )
    pending_for = timedelta(seconds=pending_s)
    expected = model(obs, threshold, recovery, pending_s, crossing)
    state = SeriesState()
    clock = T0
    for index, (gap, value, active) in enumerate(obs):
        clock += timedelta(seconds=gap)
        before = state
        state, transition = step(
            state, Observation(Decimal(value) if value is not None else None, clock, active), condition, pending_for
        )
        assert state.status == expected[index], (index, obs[: index + 1])
        if transition is None:
            assert state.status == before.status
            continue
        assert (transition.before, transition.after) in ALLOWED
        assert transition.at == clock
        if state.status in ("pending", "firing"):
            # Nothing is pending or firing without a breaching value in active hours ...
            assert active and value is not None and value > threshold
            assert state.active_at is not None and state.active_at <= clock
        if state.status == "firing":
            # ... and nothing fires before it breached for the whole pending period.
            assert clock - state.active_at >= pending_for
        if transition.after == "resolved" and active and value is not None:
            assert value <= recovery  # hysteresis: only past the recovery threshold


@given(values=st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=30))
def test_a_value_between_the_thresholds_keeps_an_alert_firing(values: list[int]) -> None:
    condition = Condition(op=">", threshold=Decimal(8), recovery_threshold=Decimal(4))
    state, _ = step(SeriesState(), Observation(Decimal(9), T0), condition, timedelta(0))
    assert state.status == "firing"
    for offset, value in enumerate(values, start=1):
        was = state.status
        state, _ = step(state, Observation(Decimal(value), T0 + timedelta(seconds=offset)), condition, timedelta(0))
        if was == "firing" and 4 < value:
            assert state.status == "firing"


def test_pending_period_then_firing_then_resolved() -> None:
    condition = Condition(op="<", threshold=Decimal(5), recovery_threshold=Decimal(7))
    five_min = timedelta(minutes=5)
    state, tr = step(SeriesState(), Observation(Decimal(3), T0), condition, five_min)
    assert (state.status, tr and tr.reason) == ("pending", "breach")
    state, tr = step(state, Observation(Decimal(3), T0 + timedelta(minutes=4)), condition, five_min)
    assert state.status == "pending" and tr is None
    state, tr = step(state, Observation(Decimal(4), T0 + timedelta(minutes=5)), condition, five_min)
    assert (state.status, tr and tr.reason, state.active_at) == ("firing", "for_elapsed", T0)
    state, tr = step(state, Observation(Decimal(6), T0 + timedelta(minutes=6)), condition, five_min)
    assert state.status == "firing" and tr is None  # 6 is within the band [5, 7)
    state, tr = step(state, Observation(Decimal(7), T0 + timedelta(minutes=7)), condition, five_min)
    assert (state.status, tr and tr.reason) == ("resolved", "recovered")


def test_outside_active_hours_or_without_value_nothing_fires() -> None:
    condition = Condition(op=">", threshold=Decimal(1))
    state, _ = step(SeriesState(), Observation(Decimal(5), T0), condition, timedelta(0))
    assert state.status == "firing"
    state, tr = step(state, Observation(Decimal(5), T0 + timedelta(hours=9), active=False), condition, timedelta(0))
    assert (state.status, tr and tr.reason) == ("resolved", "inactive")
    state, tr = step(state, Observation(None, T0 + timedelta(hours=10)), condition, timedelta(0))
    assert state.status == "resolved" and tr is None


def test_a_crossing_needs_to_be_seen_below_first() -> None:
    condition = Condition(op="crosses_above", threshold=Decimal(100))
    state, tr = step(SeriesState(), Observation(Decimal(150), T0), condition, timedelta(0))
    assert state.status == "ok" and tr is None  # already above when first seen: no crossing
    state, _ = step(state, Observation(Decimal(90), T0 + timedelta(seconds=1)), condition, timedelta(0))
    state, tr = step(state, Observation(Decimal(101), T0 + timedelta(seconds=2)), condition, timedelta(0))
    assert state.status == "firing"


def test_a_clock_going_back_does_not_shorten_the_pending_period() -> None:
    condition = Condition(op=">", threshold=Decimal(1))
    state, _ = step(SeriesState(), Observation(Decimal(5), T0), condition, timedelta(seconds=10))
    state, _ = step(state, Observation(Decimal(5), T0 - timedelta(seconds=30)), condition, timedelta(seconds=10))
    assert state.status == "pending" and state.evaluated_at == T0
