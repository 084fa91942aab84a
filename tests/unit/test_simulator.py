"""The CRM event simulator: determinism, realism, and the labels of its test-data faults."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.schemas.events import (
    EventRejected,
    RejectCode,
    ValidationPolicy,
    decode_json,
    validate_event,
    validate_payload,
)
from services.settings import BusinessSettings, FunnelStage
from services.simulation import InvalidSimulationConfig, SimRecord, Simulation, SimulationConfig
from services.simulation.faults import REJECT_CODES
from services.simulation.organisation import LOST_REASONS
from services.simulation.sinks import FileSink, HttpSink, SinkError
from services.simulator import main

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
FAULTY: dict[str, Any] = {"duplicates": 0.03, "out_of_order": 0.08, "malformed": 0.05}


def business(**fields: Any) -> BusinessSettings:
    return BusinessSettings(**fields)


def policy_for(settings: BusinessSettings) -> ValidationPolicy:
    return ValidationPolicy.from_settings(settings)


def occurred_at(record_or_event: SimRecord | dict[str, Any]) -> datetime:
    event = decode_json(record_or_event.value) if isinstance(record_or_event, SimRecord) else record_or_event
    return datetime.fromisoformat(event["occurred_at"])


@pytest.fixture(scope="module")
def faulty_records() -> list[SimRecord]:
    config = SimulationConfig.from_business(business(), managers=8, teams=2, **FAULTY)
    return list(Simulation(config, seed=7).records(START, count=12_000))


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_and_config_give_identical_records() -> None:
    config = SimulationConfig(**FAULTY)
    first = list(Simulation(config, seed=3).records(START, count=3_000))
    second = list(Simulation(config, seed=3).records(START, count=3_000))
    assert first == second


def test_each_pass_over_a_simulation_starts_over() -> None:
    simulation = Simulation(SimulationConfig(), seed=3)
    assert list(simulation.events(START, count=500)) == list(simulation.events(START, count=500))


def test_different_seeds_give_different_events_and_ids() -> None:
    first = list(Simulation(SimulationConfig(), seed=1).events(START, count=500))
    second = list(Simulation(SimulationConfig(), seed=2).events(START, count=500))
    assert first != second
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}


def test_faults_do_not_change_the_valid_events() -> None:
    """With an end instant, the ``ok`` records are exactly the fault-free events, each once."""
    end = START + timedelta(days=20)
    plain = list(Simulation(SimulationConfig(), seed=5).events(START, end=end))
    records = list(Simulation(SimulationConfig(**FAULTY), seed=5).records(START, end=end))
    ok = [json.loads(r.value) for r in records if r.expected == "ok"]
    assert sorted(ok, key=lambda e: e["event_id"]) == plain  # ids are zero-padded, in event order


def test_count_is_the_number_of_records_faults_included(faulty_records: list[SimRecord]) -> None:
    assert len(faulty_records) == 12_000


# -- shape and validity --------------------------------------------------------------------------


def test_events_come_in_event_time_order_with_unique_ids() -> None:
    events = list(Simulation(SimulationConfig(), seed=11).events(START, end=START + timedelta(days=14)))
    times = [occurred_at(e) for e in events]
    assert times == sorted(times)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(START <= t < START + timedelta(days=14) for t in times)


def test_valid_records_pass_the_contract(faulty_records: list[SimRecord]) -> None:
    policy = policy_for(business())
    valid = [r for r in faulty_records if r.is_valid]
    watermark = max(occurred_at(r) for r in valid)
    for record in valid:
        data = decode_json(record.value)
        event = validate_payload(data, policy)
        validate_event(record.value, policy, now=watermark + timedelta(hours=1), watermark=watermark)
        assert record.key == (data.get("deal_id") or data["manager_id"]).encode()
        assert isinstance(data.get("amount", ""), str)  # money as decimal strings
        assert event.occurred_at.utcoffset() is not None
        assert event.team_id is not None  # every manager has a team


def test_every_malformed_record_is_rejected_with_its_expected_code(faulty_records: list[SimRecord]) -> None:
    policy = policy_for(business())
    watermark = max(occurred_at(r) for r in faulty_records if r.is_valid)
    now = watermark + timedelta(hours=1)
    malformed = [r for r in faulty_records if not r.is_valid]
    assert {r.expected for r in malformed} == set(REJECT_CODES) == {code.value for code in RejectCode}
    for record in malformed:
        with pytest.raises(EventRejected) as rejected:
            validate_event(record.value, policy, now=now, watermark=watermark)
        assert rejected.value.rejection.code == record.expected, (record.variant, record.value)


def test_malformed_records_cover_each_rule_of_the_contract(faulty_records: list[SimRecord]) -> None:
    variants = Counter(r.variant for r in faulty_records if not r.is_valid)
    assert {
        "not_utf8",
        "nan_literal",
        "double_encoded",
        "missing_field",
        "unknown_type",
        "naive_occurred_at",
        "negative_amount",
        "bad_duration",
        "terminal_stage",
        "unconfigured_stage",
        "foreign_currency",
        "far_future",
        "ancient",
    } <= set(variants)
    nan = next(r for r in faulty_records if r.variant == "nan_literal")
    assert b"NaN" in nan.value
    not_object = next(r for r in faulty_records if r.variant == "double_encoded")
    assert isinstance(json.loads(not_object.value), str)


def test_too_old_records_are_dated_five_years_before_the_data(faulty_records: list[SimRecord]) -> None:
    earliest = min(occurred_at(r) for r in faulty_records if r.is_valid)
    ancient = [r for r in faulty_records if r.expected == "too_old"]
    assert ancient
    assert all(occurred_at(r) <= earliest - timedelta(days=5 * 365) for r in ancient)


def test_too_old_records_follow_an_accepted_record_of_their_key(faulty_records: list[SimRecord]) -> None:
    """So the watermark is set whatever partition the too_old record lands on."""
    accepted_keys: set[bytes | None] = set()
    for record in faulty_records:
        if record.expected == "too_old":
            assert record.key in accepted_keys
        if record.expected == "ok":
            accepted_keys.add(record.key)


def test_duplicates_are_byte_identical_resends_of_accepted_records(faulty_records: list[SimRecord]) -> None:
    sent_ok: set[tuple[bytes | None, bytes]] = set()
    duplicates = 0
    for record in faulty_records:
        if record.expected == "duplicate":
            duplicates += 1
            assert (record.key, record.value) in sent_ok
        elif record.expected == "ok":
            assert (record.key, record.value) not in sent_ok
            sent_ok.add((record.key, record.value))
    assert 0.02 * len(faulty_records) < duplicates < 0.04 * len(faulty_records)


def test_late_records_arrive_after_later_events_even_a_deal_outcome_before_its_creation() -> None:
    config = SimulationConfig(out_of_order=0.2)
    records = list(Simulation(config, seed=2).records(START, end=START + timedelta(days=60)))
    late = [r for r in records if r.out_of_order]
    assert 0.1 * len(records) < len(late) < 0.3 * len(records)
    times = [occurred_at(r) for r in records]
    assert any(later < earlier for earlier, later in itertools.pairwise(times))
    created: set[str] = set()
    outcomes_before_creation = 0
    for record in records:
        event = json.loads(record.value)
        if event["type"] == "deal_created":
            created.add(event["deal_id"])
        elif event["type"] in ("deal_won", "deal_lost") and event["deal_id"] not in created:
            outcomes_before_creation += 1
    assert outcomes_before_creation > 0


# -- realism -------------------------------------------------------------------------------------


def _deal_histories(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    deals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["type"].startswith("deal_"):
            deals[event["deal_id"]].append(event)
    return deals


@pytest.mark.parametrize(
    "stages", [("new", "qualified", "proposal", "negotiation"), ("lead", "demo", "closing"), ("open",)]
)
def test_deals_move_forward_through_the_configured_funnel(stages: tuple[str, ...]) -> None:
    settings = business(funnel=tuple(FunnelStage(name=s, probability=Decimal("0.5")) for s in stages))
    policy = policy_for(settings)
    config = SimulationConfig.from_business(settings)
    events = list(Simulation(config, seed=4).events(START, end=START + timedelta(days=120)))
    for event in events:
        validate_payload(event, policy)
    outcomes: Counter[str] = Counter()
    for deal_id, history in _deal_histories(events).items():
        assert history[0]["type"] == "deal_created", deal_id
        assert history[0].get("stage", stages[0]) == stages[0]
        position = 0
        for step, event in enumerate(history[1:], start=1):
            if event["type"] == "deal_stage_changed":
                assert stages.index(event["stage"]) == position + 1, history
                position += 1
            elif event["type"] == "deal_won":
                assert position == len(stages) - 1, history
            elif event["type"] == "deal_lost":
                assert event.get("lost_reason", "unspecified") in (*LOST_REASONS, "unspecified")
            else:
                raise AssertionError(f"unexpected {event['type']} in {deal_id}")
            if event["type"] in ("deal_won", "deal_lost"):
                assert step == len(history) - 1, "nothing happens to a deal after it closes"
                outcomes[event["type"]] += 1
    assert outcomes["deal_won"] > 0
    assert outcomes["deal_lost"] > 0


def test_business_hours_hold_in_new_york_across_dst_changes() -> None:
    zone = ZoneInfo("America/New_York")
    config = SimulationConfig.from_business(business(timezone="America/New_York"))
    simulation = Simulation(config, seed=9)
    offsets: set[timedelta | None] = set()
    for first_day in (date(2024, 3, 4), date(2024, 10, 28)):  # DST starts 2024-03-10, ends 2024-11-03
        start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=zone)
        events = list(simulation.events(start, end=start + timedelta(days=14)))
        assert events
        for event in events:
            moment = occurred_at(event)
            local = moment.astimezone(zone)
            assert local.weekday() < 5, event
            assert 9 <= local.hour < 18, event
            if not event["occurred_at"].endswith("Z"):
                assert moment.utcoffset() == local.utcoffset()
                offsets.add(moment.utcoffset())
        local_days = {occurred_at(e).astimezone(zone).date() for e in events}
        assert {first_day + timedelta(days=4), first_day + timedelta(days=7)} <= local_days  # around the change
    assert offsets == {timedelta(hours=-5), timedelta(hours=-4)}


def test_activity_follows_the_working_day_with_a_lunch_dip() -> None:
    events = list(Simulation(SimulationConfig(), seed=8).events(START, end=START + timedelta(days=28)))
    by_hour = Counter(occurred_at(e).hour for e in events)
    assert by_hour[12] < 0.7 * by_hour[11]
    assert by_hour[12] < 0.7 * by_hour[14]
    calls = Counter((e["manager_id"], e["occurred_at"][:10]) for e in events if e["type"] == "call")
    assert 20 <= statistics.median(calls.values()) <= 60
    assert all(0 < n <= 90 for n in calls.values())
    for event in events:
        if event["type"] in ("call", "meeting"):
            assert isinstance(event["duration_s"], int) and event["duration_s"] >= 0
            assert event["outcome"]


def test_organisation_customers_and_lead_sources_look_real() -> None:
    config = SimulationConfig(managers=10, teams=3)
    simulation = Simulation(config, seed=12)
    assert [m.manager_id for m in simulation.managers][:3] == ["mgr-001", "mgr-002", "mgr-003"]
    assert Counter(m.team_id for m in simulation.managers) == {"team-01": 4, "team-02": 3, "team-03": 3}
    events = list(simulation.events(START, end=START + timedelta(days=180)))
    teams = {m.manager_id: m.team_id for m in simulation.managers}
    assert all(e["team_id"] == teams[e["manager_id"]] for e in events)

    deals = _deal_histories(events)
    customer_of = {d: h[0]["customer_id"] for d, h in deals.items()}
    source_of = {d: h[0].get("lead_source", "unknown") for d, h in deals.items()}
    wins = [e for e in events if e["type"] == "deal_won"]
    assert max(Counter(customer_of[e["deal_id"]] for e in wins).values()) >= 2, "repeat business"
    closed: dict[str, Counter[str]] = defaultdict(Counter)
    for history in deals.values():
        if history[-1]["type"] in ("deal_won", "deal_lost"):
            closed[source_of[history[0]["deal_id"]]][history[-1]["type"]] += 1
    rate = {s: c["deal_won"] / (c["deal_won"] + c["deal_lost"]) for s, c in closed.items()}
    assert rate["referral"] > rate["cold_call"]
    assert {"web", "referral", "cold_call", "partner", "event"} <= set(rate)
    created = [h[0] for h in deals.values()]
    amount_by_source: dict[str, list[Decimal]] = defaultdict(list)
    for event in created:
        amount_by_source[event.get("lead_source", "unknown")].append(Decimal(event["amount"]))
    assert statistics.median(amount_by_source["partner"]) > statistics.median(amount_by_source["cold_call"])
    final_differs = 0
    for history in deals.values():
        amounts = [Decimal(e["amount"]) for e in history if "amount" in e]
        final_differs += history[-1]["type"] == "deal_won" and amounts[-1] != amounts[0]
    assert final_differs > 0
    cycles = [(occurred_at(h[-1]) - occurred_at(h[0])).days for h in deals.values() if h[-1]["type"] == "deal_won"]
    assert 3 <= statistics.median(cycles) <= 45
    proposals = [e for e in events if e["type"] == "proposal_sent"]
    assert sum("deal_id" in e for e in proposals) > 0.6 * len(proposals)


def test_live_mode_dates_events_by_the_clock() -> None:
    ticks = iter(START + timedelta(seconds=i) for i in range(10_000))
    records = list(Simulation(SimulationConfig(), seed=1).records(START, count=50, clock=lambda: next(ticks)))
    assert [occurred_at(r) for r in records] == [START + timedelta(seconds=i) for i in range(50)]


def test_config_is_checked() -> None:
    with pytest.raises(InvalidSimulationConfig, match="teams"):
        SimulationConfig(teams=5, managers=3)
    with pytest.raises(InvalidSimulationConfig, match="fraction"):
        SimulationConfig(duplicates=1.5)
    with pytest.raises(InvalidSimulationConfig, match="aware"):
        Simulation(SimulationConfig(), seed=1).events(datetime(2024, 3, 1))


# -- sinks and command line ----------------------------------------------------------------------


async def test_http_sink_batches_valid_records_and_sends_malformed_ones_alone(
    faulty_records: list[SimRecord],
) -> None:
    bodies: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        try:
            body = json.loads(request.content)
            if isinstance(body, list) and all(isinstance(item, dict) for item in body):
                return httpx.Response(202, json={"accepted": len(body)})
        except ValueError:
            pass
        return httpx.Response(422, json={"errors": []})

    records = faulty_records[:2_000]
    async with HttpSink("http://test", batch_size=100, transport=httpx.MockTransport(answer)) as sink:
        await sink.write(records)
    valid = sum(r.is_valid for r in records)
    assert sink.endpoint == "http://test/api/v1/events"
    assert sink.stats.sent == len(records)
    assert sink.stats.accepted == valid
    assert sink.stats.rejected == len(records) - valid
    assert b"".join(bodies).count(b'"event_id"') >= valid


async def test_http_sink_sends_its_token_and_stops_when_it_is_refused(faulty_records: list[SimRecord]) -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(403, json={"detail": "forbidden: display 'wall' (company) may not ingest events"})

    records = [record for record in faulty_records if record.is_valid][:10]
    async with HttpSink("http://test", token="crmp_x", transport=httpx.MockTransport(answer)) as sink:
        with pytest.raises(SinkError, match=r"refused the API token.*--token"):
            await sink.write(records)
    assert seen == ["Bearer crmp_x"]


async def test_file_sink_writes_one_raw_record_per_line(tmp_path: Path, faulty_records: list[SimRecord]) -> None:
    path = tmp_path / "events.jsonl"
    async with FileSink(path) as sink:
        await sink.write(faulty_records[:1_000])
    assert path.read_bytes().split(b"\n")[:-1] == [r.value for r in faulty_records[:1_000]]


def test_command_line_writes_history_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "history.jsonl"
    argv = ["--fast", "--start", "2024-03-01", "--days", "10", "--seed", "4", "--malformed", "0.02"]
    assert main([*argv, "--sink", "file", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = out.read_bytes().splitlines()
    assert summary["records"] == len(lines) > 1_000
    assert summary["mode"] == "history"
    assert set(summary["expected"]) >= {"ok", "invalid_json", "too_old"}
    config = SimulationConfig(malformed=0.02)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    expected = Simulation(config, seed=4).records(start, end=start + timedelta(days=10))
    assert lines == [r.value for r in expected]


def test_command_line_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--out-of-order" in capsys.readouterr().out
    with pytest.raises(SystemExit) as failed:
        main(["--rate", "10", "--days", "3"])
    assert failed.value.code == 2


def test_the_progress_line_drops_an_estimate_once_it_is_passed_and_at_the_end() -> None:
    import io

    from services.simulation.pacing import Progress, RunReport

    stream = io.StringIO()
    progress = Progress(1_381, approximate=True, stream=stream)
    progress.update(RunReport(records=700, expected=Counter(ok=700)), final=True)
    progress.update(RunReport(records=1_559, expected=Counter(ok=1_559)), final=True)
    exact = Progress(2_000, stream=stream)
    exact.update(RunReport(records=500, expected=Counter(ok=500)), final=True)

    running = Progress(1_381, approximate=True, stream=stream)
    running._interval = 0.0  # draw every update
    running.update(RunReport(records=1_500, expected=Counter(ok=1_500)))

    first, last, counted, passed = stream.getvalue().splitlines()
    assert first.startswith("simulator: 700 records")  # final: the count, no "/~1,381 (51%)"
    assert last.startswith("simulator: 1,559 records ")
    assert "~" not in last and "100%" not in last
    assert counted.startswith("simulator: 500/2,000 records (25%)")
    assert passed.startswith("simulator: 1,500 records (past the estimate of ~1,381)")
