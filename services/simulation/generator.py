"""The simulation: customers, deals and activities of the organisation over time.

A discrete-event simulation in event time, with no I/O: each working day every manager gets
calls, meetings, standalone proposals and new deals at instants drawn from the business-hour
profile; each deal then moves forward through the configured funnel, one stage every few
working days, until it is won or lost. Events come out in ``occurred_at`` order.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

from services.simulation.business_hours import BusinessCalendar, to_ms
from services.simulation.config import SimulationConfig
from services.simulation.errors import InvalidSimulationConfig
from services.simulation.faults import TOO_OLD_YEARS_DAYS, FaultInjector, MalformedRecords, SimRecord
from services.simulation.organisation import (
    CALL_OUTCOMES,
    LEAD_SOURCES,
    LOST_REASONS,
    MEETING_OUTCOMES,
    UPSELL,
    LeadSource,
    ManagerProfile,
    draw_managers,
)

T = TypeVar("T")


class _Weighted(Generic[T]):
    """A weighted choice drawn with one random number (``random.choices`` is slow)."""

    def __init__(self, options: Sequence[T], weights: Sequence[float]) -> None:
        self.options = tuple(options)
        self.cumulative = tuple(itertools.accumulate(weights))

    def draw(self, rng: random.Random) -> T:
        return self.options[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]


_EARLY_LOSS = (0.05, 0.10, 0.35, 0.25, 0.25)  # a deal dropped in the first stage
_LATE_LOSS = (0.35, 0.30, 0.05, 0.10, 0.20)  # a deal lost in the last stage

_DEAL_CALL_OUTCOMES = _Weighted(CALL_OUTCOMES, (0.7, 0.15, 0.12, 0.03))
_PROSPECT_CALL_OUTCOMES = _Weighted(CALL_OUTCOMES, (0.42, 0.26, 0.27, 0.05))
_MEETING_OUTCOMES = _Weighted(MEETING_OUTCOMES, (0.85, 0.07, 0.08))
_NEW_LEAD_SOURCES = _Weighted(LEAD_SOURCES, tuple(source.share for source in LEAD_SOURCES))
_WEEKDAY_FACTOR = (1.05, 1.0, 1.0, 0.98, 0.85, 0.0, 0.0)
_ABSENCE_RATE = 0.04  # vacation or sick days
_REPEAT_RATE = 0.2  # new deals with a customer who already won one
_RETRY_RATE = 0.05  # new deals with a customer who lost one
_HANDOVER_RATE = 0.02  # a deal moves to a teammate at a step
_STANDALONE_PROPOSALS = 0.15  # per manager per day: quotes without a deal
_DEAL_LINKED_CALLS = 0.35
_DEAL_LINKED_MEETINGS = 0.75
_MINUTE_MS = 60_000


@dataclass(eq=False, slots=True)
class _Deal:
    deal_id: str
    customer_id: str
    source: LeadSource
    owner: ManagerProfile
    amount_cents: int
    win_rate: float
    stage_index: int = 0
    advances: bool = True  # outcome of the scheduled next step
    open: bool = True


_CALL, _MEETING, _PROPOSAL, _NEW_DEAL, _DEAL_STEP = range(5)


class Simulation:
    """A deterministic CRM event generator: the same config and seed give the same output.

    ``events()`` yields valid event dicts in event-time order; ``records()`` adds the
    configured duplicates, late deliveries and malformed records, as raw :class:`SimRecord`.
    Each call starts over from the seed.
    """

    def __init__(self, config: SimulationConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        master = random.Random(seed)
        roster_rng = random.Random(master.getrandbits(64))
        self._events_seed = master.getrandbits(64)
        self._faults_seed = master.getrandbits(64)
        self.calendar = BusinessCalendar.named(config.timezone)
        self.managers = draw_managers(config, roster_rng)

    def run_tag(self, start: datetime) -> str:
        """8 hex digits in every event and deal id: differs between seeds, starts and organisations."""
        identity = (
            f"{self.seed}|{to_ms(start)}|{self.config.teams}|{self.config.managers}|{self.config.timezone}|"
            f"{','.join(self.config.stages)}|{self.config.currency}"
        )
        return hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()

    def events(
        self, start: datetime, *, end: datetime | None = None, count: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Valid events from ``start`` until ``end`` (exclusive) or ``count`` events, whichever first."""
        _require_aware(start, "start")
        if end is not None:
            _require_aware(end, "end")
        run = _SimulationRun(self, start, random.Random(self._events_seed))
        return run.events(end_ms=None if end is None else to_ms(end), count=count)

    def records(
        self,
        start: datetime,
        *,
        end: datetime | None = None,
        count: int | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Iterator[SimRecord]:
        """Records with faults, until ``end`` or ``count`` records (faults included).

        With ``clock`` (live mode) each event's ``occurred_at`` is the clock's time when the
        event is taken, instead of the simulated time; the order of events is unchanged.
        """
        events = self.events(start, end=end)
        if clock is not None:
            events = restamp(events, clock, self.calendar)
        faults_rng = random.Random(self._faults_seed)
        too_old_before = start - timedelta(days=max(TOO_OLD_YEARS_DAYS, self.config.history_retention_days + 366))
        malformed = MalformedRecords(
            random.Random(faults_rng.getrandbits(64)),
            stages=self.config.stages,
            currency=self.config.currency,
            too_old_before=too_old_before,
        )
        injector = FaultInjector(self.config.fault_rates, faults_rng, malformed)
        return injector.records(events, count=count)

    def expected_events_per_day(self) -> float:
        """About how many valid events a calendar day brings (for progress and window sizing)."""
        stages = len(self.config.stages)
        mean_win = sum(source.share * source.win_rate for source in LEAD_SOURCES)
        advance: float = mean_win ** (1 / stages)
        events_per_deal = 1 + sum(advance**step for step in range(stages)) + advance ** _proposal_index(self.config)
        per_working_day = sum(
            (profile.calls_per_day + profile.meetings_per_day) * self.config.activity
            + _STANDALONE_PROPOSALS
            + profile.deals_per_day * events_per_deal
            for profile in self.managers
        )
        return per_working_day * (1 - _ABSENCE_RATE) * sum(_WEEKDAY_FACTOR) / 7


def restamp(
    events: Iterator[dict[str, Any]], clock: Callable[[], datetime], calendar: BusinessCalendar
) -> Iterator[dict[str, Any]]:
    """The same events, each dated by the clock when taken (live mode)."""
    for event in events:
        event["occurred_at"] = calendar.format(to_ms(clock()), utc=event["occurred_at"].endswith("Z"))
        yield event


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidSimulationConfig(f"{name} must be an aware datetime (with a time zone), got {moment.isoformat()}")


def _proposal_index(config: SimulationConfig) -> int:
    """The stage whose entry sends a proposal: 'proposal' when configured, else mid-funnel."""
    return config.stages.index("proposal") if "proposal" in config.stages else len(config.stages) // 2


def _poisson(rng: random.Random, mean: float) -> int:
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def _round_amount(cents: float) -> int:
    """Deal amounts are quoted in steps of 50.00."""
    return max(5_000, round(cents / 5_000) * 5_000)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class _SimulationRun:
    """The mutable state of one pass over the simulation."""

    def __init__(self, simulation: Simulation, start: datetime, rng: random.Random) -> None:
        config = simulation.config
        self.rng = rng
        self.calendar = simulation.calendar
        self.stages = config.stages
        self.last_stage = len(config.stages) - 1
        self.proposal_stage = _proposal_index(config)
        self.activity = config.activity
        self.currency = config.currency
        self.managers = simulation.managers
        self.teammates: dict[str, list[ManagerProfile]] = {}
        for profile in self.managers:
            self.teammates.setdefault(profile.team_id, []).append(profile)
        self.tag = simulation.run_tag(start)
        self.start_ms = to_ms(start)
        self.open_deals: dict[str, list[_Deal]] = {profile.manager_id: [] for profile in self.managers}
        self.won_customers: list[str] = []
        self.won_customer_set: set[str] = set()
        self.lost_customers: list[str] = []
        self.queue: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.event_count = 0
        self.deal_count = 0
        self.customer_count = 0

    # -- the event loop --
    def events(self, *, end_ms: int | None, count: int | None) -> Iterator[dict[str, Any]]:
        calendar = self.calendar
        day = calendar.local_date(self.start_ms)
        scheduled_until = calendar.midnight_ms(day)
        produced = 0
        while count is None or produced < count:
            while not self.queue or self.queue[0][0] >= scheduled_until:
                if end_ms is not None and scheduled_until >= end_ms and (not self.queue or self.queue[0][0] >= end_ms):
                    return
                self._schedule_day(day)
                day += timedelta(days=1)
                scheduled_until = calendar.midnight_ms(day)
            at, _, kind, subject = heapq.heappop(self.queue)
            if end_ms is not None and at >= end_ms:
                return
            if at < self.start_ms:
                continue
            for event in self._happen(at, kind, subject):
                yield event
                produced += 1
                if count is not None and produced >= count:
                    return

    def _push(self, at: int, kind: int, subject: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, subject))

    def _schedule_day(self, day: date) -> None:
        factor = _WEEKDAY_FACTOR[day.weekday()]
        if not factor:
            return
        rng, sample, activity = self.rng, self.calendar.sample_ms, self.activity
        for profile in self.managers:
            if rng.random() < _ABSENCE_RATE:
                continue
            mean_calls = profile.calls_per_day * activity
            calls = max(0, round(rng.gauss(mean_calls * factor, mean_calls * 0.12)))
            for _ in range(calls):
                self._push(sample(rng, day), _CALL, profile)
            for _ in range(_poisson(rng, profile.meetings_per_day * activity)):
                self._push(sample(rng, day), _MEETING, profile)
            for _ in range(_poisson(rng, _STANDALONE_PROPOSALS)):
                self._push(sample(rng, day), _PROPOSAL, (profile, None))
            for _ in range(_poisson(rng, profile.deals_per_day * factor)):
                self._push(sample(rng, day), _NEW_DEAL, profile)

    def _happen(self, at: int, kind: int, subject: Any) -> list[dict[str, Any]]:
        if kind == _CALL:
            return [self._call(at, subject)]
        if kind == _MEETING:
            return [self._meeting(at, subject)]
        if kind == _PROPOSAL:
            profile, deal = subject
            if deal is None:
                return [self._proposal(at, profile, None)]
            return [self._proposal(at, deal.owner, deal)] if deal.open else []
        if kind == _NEW_DEAL:
            return [self._new_deal(at, subject)]
        return [self._deal_step(at, subject)]

    # -- events --
    def _event(self, event_type: str, at: int, profile: ManagerProfile) -> dict[str, Any]:
        self.event_count += 1
        return {
            "event_id": f"ev-{self.tag}-{self.event_count:08d}",
            "type": event_type,
            "occurred_at": self.calendar.format(at, utc=profile.utc_timestamps),
            "manager_id": profile.manager_id,
            "team_id": profile.team_id,
        }

    def _pick_open_deal(self, profile: ManagerProfile, linked_share: float) -> _Deal | None:
        deals = self.open_deals[profile.manager_id]
        if deals and self.rng.random() < linked_share:
            return self.rng.choice(deals)
        return None

    def _call(self, at: int, profile: ManagerProfile) -> dict[str, Any]:
        rng = self.rng
        event = self._event("call", at, profile)
        deal = self._pick_open_deal(profile, _DEAL_LINKED_CALLS)
        if deal is not None:
            event["deal_id"] = deal.deal_id
            event["customer_id"] = deal.customer_id
            outcome = _DEAL_CALL_OUTCOMES.draw(rng)
        else:
            outcome = _PROSPECT_CALL_OUTCOMES.draw(rng)
        if outcome == "connected":
            duration = int(min(3_600, max(30, rng.lognormvariate(5.4, 0.7))))  # median about 4 minutes
        elif outcome == "voicemail":
            duration = rng.randint(15, 60)
        elif outcome == "no_answer":
            duration = rng.randint(0, 25)
        else:
            duration = 0
        event["duration_s"] = duration
        event["outcome"] = outcome
        return event

    def _meeting(self, at: int, profile: ManagerProfile) -> dict[str, Any]:
        rng = self.rng
        event = self._event("meeting", at, profile)
        deal = self._pick_open_deal(profile, _DEAL_LINKED_MEETINGS)
        if deal is not None:
            event["deal_id"] = deal.deal_id
            event["customer_id"] = deal.customer_id
        outcome = _MEETING_OUTCOMES.draw(rng)
        event["duration_s"] = rng.choice((1_800, 2_700, 3_600, 3_600)) if outcome == "held" else 0
        event["outcome"] = outcome
        return event

    def _proposal(self, at: int, profile: ManagerProfile, deal: _Deal | None) -> dict[str, Any]:
        event = self._event("proposal_sent", at, profile)
        if deal is not None:
            event["deal_id"] = deal.deal_id
            event["customer_id"] = deal.customer_id
        return event

    def _new_deal(self, at: int, profile: ManagerProfile) -> dict[str, Any]:
        rng = self.rng
        customer_id, source = self._choose_customer()
        median = source.median_amount * 100 * (0.8 + 0.4 * profile.skill)
        self.deal_count += 1
        deal = _Deal(
            deal_id=f"deal-{self.tag}-{self.deal_count:06d}",
            customer_id=customer_id,
            source=source,
            owner=profile,
            amount_cents=_round_amount(median * rng.lognormvariate(0, 0.6)),
            win_rate=min(0.9, max(0.02, source.win_rate * profile.skill)),
        )
        self.open_deals[profile.manager_id].append(deal)
        event = self._event("deal_created", at, profile)
        event["deal_id"] = deal.deal_id
        event["customer_id"] = customer_id
        event["amount"] = _money(deal.amount_cents)
        if rng.random() < 0.7:
            event["currency"] = self.currency
        if rng.random() < 0.85:  # otherwise the contract's default: the first stage
            event["stage"] = self.stages[0]
        if rng.random() < 0.97:  # otherwise the contract's default: unknown
            event["lead_source"] = source.name
        self._schedule_step(at, deal)
        if self.proposal_stage == 0:
            self._schedule_proposal(at, deal)
        return event

    def _choose_customer(self) -> tuple[str, LeadSource]:
        rng = self.rng
        draw = rng.random()
        if draw < _REPEAT_RATE and self.won_customers:
            return rng.choice(self.won_customers), UPSELL
        source = _NEW_LEAD_SOURCES.draw(rng)
        if draw < _REPEAT_RATE + _RETRY_RATE and self.lost_customers:
            return rng.choice(self.lost_customers), source
        self.customer_count += 1
        return f"cust-{self.customer_count:05d}", source

    def _schedule_step(self, at: int, deal: _Deal) -> None:
        rng = self.rng
        stages = self.last_stage + 1
        deal.advances = rng.random() < deal.win_rate ** (1 / stages)
        mean_gap = deal.source.cycle_days / stages * (1.0 if deal.advances else 1.4)
        gap_days = max(1, round(rng.lognormvariate(math.log(mean_gap), 0.5)))
        day = self.calendar.add_working_days(self.calendar.local_date(at), gap_days)
        self._push(self.calendar.sample_ms(rng, day), _DEAL_STEP, deal)

    def _schedule_proposal(self, at: int, deal: _Deal) -> None:
        sent = self.calendar.sample_after_ms(self.rng, at, max_gap_ms=30 * _MINUTE_MS)
        self._push(sent, _PROPOSAL, (deal.owner, deal))

    def _deal_step(self, at: int, deal: _Deal) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < _HANDOVER_RATE:
            self._hand_over(deal)
        profile = deal.owner
        if not deal.advances:
            return self._close(at, deal, won=False)
        if deal.stage_index == self.last_stage:
            return self._close(at, deal, won=True)
        deal.stage_index += 1
        event = self._event("deal_stage_changed", at, profile)
        event["deal_id"] = deal.deal_id
        event["stage"] = self.stages[deal.stage_index]
        if rng.random() < 0.25:
            deal.amount_cents = _round_amount(deal.amount_cents * rng.uniform(0.85, 1.2))
            event["amount"] = _money(deal.amount_cents)
        if deal.stage_index == self.proposal_stage or (
            deal.stage_index == self.proposal_stage + 1 and rng.random() < 0.25  # a revised proposal
        ):
            self._schedule_proposal(at, deal)
        self._schedule_step(at, deal)
        return event

    def _hand_over(self, deal: _Deal) -> None:
        others = [p for p in self.teammates[deal.owner.team_id] if p is not deal.owner]
        if others:
            self.open_deals[deal.owner.manager_id].remove(deal)
            deal.owner = self.rng.choice(others)
            self.open_deals[deal.owner.manager_id].append(deal)

    def _close(self, at: int, deal: _Deal, *, won: bool) -> dict[str, Any]:
        rng = self.rng
        deal.open = False
        self.open_deals[deal.owner.manager_id].remove(deal)
        event = self._event("deal_won" if won else "deal_lost", at, deal.owner)
        event["deal_id"] = deal.deal_id
        if won:
            changed = rng.random() < 0.35
            if changed:  # mostly a discount, sometimes an expansion
                factor = rng.uniform(0.85, 0.97) if rng.random() < 0.75 else rng.uniform(1.05, 1.25)
                deal.amount_cents = _round_amount(deal.amount_cents * factor)
            if changed or rng.random() < 0.5:
                event["amount"] = _money(deal.amount_cents)
                if rng.random() < 0.7:
                    event["currency"] = self.currency
            if deal.customer_id not in self.won_customer_set:
                self.won_customer_set.add(deal.customer_id)
                self.won_customers.append(deal.customer_id)
        else:
            lateness = deal.stage_index / self.last_stage if self.last_stage else 1.0
            weights = [early + (late - early) * lateness for early, late in zip(_EARLY_LOSS, _LATE_LOSS, strict=True)]
            if rng.random() < 0.95:  # otherwise the contract's default: unspecified
                event["lost_reason"] = rng.choices(LOST_REASONS, weights)[0]
            self.lost_customers.append(deal.customer_id)
        return event


__all__ = ["Simulation", "restamp"]
