"""Redis memory over two simulated years of CRM activity, with the retention sweeper: does it level off?

``python -m bench.memory_retention``                              (500 managers, 730 days, product retention)
``python -m bench.memory_retention --history-retention-days 180`` (every retention horizon reached in the run)

Simulates ``--days`` of history (``services.simulation``, history mode: event time in business
hours, events in ``occurred_at`` order) for ``--managers`` managers. Calls and meetings are scaled
by ``--activity`` (default 0.05: 1-3 calls a day instead of 20-60) so that two years of 500
managers stay near 1.6 million events and the run near ten minutes on 2 cores; deals, their
stage changes, wins and losses are kept at their realistic rate, since they make the deal
histories and most bucket fields. The history is cut into calendar quarters. For each quarter:
produce its events to Kafka, apply them with the bulk path (``streams.replay``, continuing from
the offsets the state holds), run the retention sweeper once (``streams.sweeper``, as a worker
would every minute), and record Redis ``used_memory`` and the keys by kind.

Event-id claims expire by a wall-clock TTL (history retention + 2 days after acceptance), which a
compressed run never reaches; the bench deletes each claim when that TTL would have run out in
simulated time (``--no-claim-expiry`` keeps them all, to see their share).

Servers: its own Kafka (127.0.0.1:23092, controller 23093) and Redis (127.0.0.1:23379) in
``.local/bench-mem``, wiped at the start and stopped at the end. Results: one JSON line per run
in ``bench/results/memory_retention.jsonl``, and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.reporting import RESULTS_DIR, append_result
from bench.servers import bench_servers, say
from services.kafka import ensure_product_topics
from services.kpis.retention import RetentionPolicy
from services.settings import LocalInfraSettings, Settings, minimum_month_months
from services.simulation import SimRecord, Simulation, SimulationConfig
from services.simulation.faults import kafka_key
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from streams.replay import replay
from streams.sweeper import RetentionSweeper

NAME = "memory_retention"
MEM_LOCAL = LocalInfraSettings(
    data_dir=Path(".local/bench-mem"),
    kafka_port=23092,
    kafka_controller_port=23093,
    redis_port=23379,
    postgres_port=23432,
)
MB = 1024 * 1024
FAMILIES = ("day", "month", "utcday", "hour", "minute", "deal", "cust", "seen", "cur", "dir", "idx", "changes", "other")
"""Kinds of key: the KPI bucket granularities, then the second part of the key (``changes``: the change feed)."""


@dataclass
class Step:
    """The state after one simulated quarter."""

    quarter: int
    until: str
    events: int
    events_total: int
    used_memory: int
    used_memory_dataset: int
    keys: dict[str, int]
    estimated_mb: dict[str, float]
    """Memory by kind of key, estimated from a sample (MEMORY USAGE)."""
    swept: dict[str, int]
    claims_expired: int
    seconds: dict[str, float] = field(default_factory=dict)


def quarter_bounds(start: datetime, end: datetime) -> list[datetime]:
    """Calendar-quarter boundaries after ``start`` (local midnight), then ``end``."""
    zone = start.tzinfo
    bounds: list[datetime] = []
    day = date(start.year, (start.month - 1) // 3 * 3 + 1, 1)
    while True:
        index = day.year * 12 + day.month - 1 + 3
        day = date(index // 12, index % 12 + 1, 1)
        boundary = datetime.combine(day, clock_time(), tzinfo=zone)
        if boundary >= end:
            break
        bounds.append(boundary)
    return [*bounds, end]


def quarters(simulation: Simulation, start: datetime, end: datetime) -> Iterator[tuple[datetime, list[dict[str, Any]]]]:
    """The simulated events of each quarter, in occurred_at order (one pass over the simulation)."""
    bounds = iter(quarter_bounds(start, end))
    boundary = next(bounds)
    batch: list[dict[str, Any]] = []
    for event in simulation.events(start, end=end):
        occurred = datetime.fromisoformat(event["occurred_at"])
        while occurred >= boundary:
            yield boundary, batch
            batch = []
            boundary = next(bounds)
        batch.append(event)
    yield boundary, batch
    for rest in bounds:  # quarters with no events at all
        yield rest, []


class ClaimExpiry:
    """Deletes event-id claims when their TTL would have run out in simulated time.

    The simulation numbers its events in occurred_at order (``ev-<run tag>-<number>``), so the
    claims to expire by a simulated instant are those numbered up to the last event before it.
    """

    def __init__(self, redis: Redis, keys: RedisKeys, ttl: timedelta) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.marks: list[tuple[datetime, str, int]] = []
        """(occurred_at, id prefix, number) of the last event of each simulated day."""
        self.expired_through = 0

    def note(self, events: list[dict[str, Any]]) -> None:
        last_day: date | None = None
        for event in events:
            occurred = datetime.fromisoformat(event["occurred_at"])
            prefix, _, number = event["event_id"].rpartition("-")
            if occurred.date() != last_day or not self.marks:
                self.marks.append((occurred, prefix, int(number)))
                last_day = occurred.date()
            else:
                self.marks[-1] = (occurred, prefix, int(number))

    async def expire(self, now: datetime) -> int:
        """Delete the claims of events accepted (= occurred) more than the TTL before ``now``."""
        cutoff = now - self.ttl
        upto = 0
        prefix = ""
        while self.marks and self.marks[0][0] < cutoff:
            _, prefix, upto = self.marks.pop(0)
        if upto <= self.expired_through:
            return 0
        deleted = 0
        for first in range(self.expired_through + 1, upto + 1, 5000):
            ids = [self.keys.seen_event(f"{prefix}-{n:08d}") for n in range(first, min(first + 5000, upto + 1))]
            deleted += await self.redis.unlink(*ids)
        self.expired_through = upto
        return deleted


async def memory(redis: Redis) -> tuple[int, int]:
    """used_memory and used_memory_dataset, once lazy frees (UNLINK) have finished."""
    for _ in range(100):
        info = await redis.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)):
            break
        await asyncio.sleep(0.1)
    return int(info["used_memory"]), int(info["used_memory_dataset"])


async def key_counts(redis: Redis, prefix: str) -> tuple[dict[str, int], dict[str, float]]:
    """Keys of the deployment by kind, and an estimate of each kind's memory in MB (MEMORY USAGE of
    the first 300 keys of the kind times the count). A SCAN: fine for a bench, never done by the product."""
    counts: Counter[str] = Counter()
    samples: dict[str, list[bytes]] = {}
    async for raw in redis.scan_iter(match=f"{prefix}:*", count=20_000):
        parts = raw.decode().split(":", 3)
        kind = parts[2] if len(parts) > 2 and parts[1] == "kpi" else parts[1] if len(parts) > 1 else "other"
        kind = kind if kind in FAMILIES else "other"
        counts[kind] += 1
        if len(samples.setdefault(kind, [])) < 300:
            samples[kind].append(raw)
    estimate: dict[str, float] = {}
    for kind, keys in samples.items():
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
            sizes = [size for size in await pipe.execute() if size is not None]
        estimate[kind] = round(sum(sizes) / max(len(sizes), 1) * counts[kind] / MB, 1)
    return {family: counts.get(family, 0) for family in FAMILIES}, estimate


async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
    started = time.monotonic()
    history = args.history_retention_days
    with bench_servers(run_id, local=MEM_LOCAL) as servers:
        settings: Settings = servers.fresh(
            "mem",
            kafka={"partitions": args.partitions},
            business={"history_retention_days": history},
            retention={"month_months": args.month_months or minimum_month_months(history, 7)},
        )
        await ensure_product_topics(settings)
        policy = RetentionPolicy.from_settings(settings)
        config = SimulationConfig.from_business(
            settings.business, managers=args.managers, teams=args.teams, activity=args.activity
        )
        end = datetime.now(settings.business.zone).replace(second=0, microsecond=0)
        start = datetime.combine((end - timedelta(days=args.days)).date(), clock_time(), tzinfo=settings.business.zone)
        say(
            f"{args.managers} managers in {args.teams} teams, activity {args.activity}, "
            f"{start.date()} .. {end.date()}, "
            f"history retention {history} d, month buckets {policy.month_months}, window buckets {policy.window_days} d"
        )
        redis = Redis.from_url(settings.redis.url)
        if "redis" in servers.started:
            # Our own server: no AOF. The bench measures memory, and rewriting the AOF of a growing
            # dataset stalls the server for seconds on a busy disk (replay's client times out at 5 s).
            await redis.config_set("appendonly", "no")
        try:
            steps = await apply_quarters(args, settings, redis, Simulation(config, seed=args.seed), start, end)
            keys = RedisKeys.from_settings(settings)
            raw_stats = await redis.hgetall(keys.worker_stats)
            stats = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw_stats.items()}
        finally:
            await redis.aclose()
    record = {
        "run_id": run_id,
        "parameters": {
            "managers": args.managers,
            "teams": args.teams,
            "days": args.days,
            "activity": args.activity,
            "seed": args.seed,
            "partitions": args.partitions,
            "history_retention_days": history,
            "month_months": policy.month_months,
            "window_days": policy.window_days,
            "claim_expiry_emulated": not args.no_claim_expiry,
            "start": start.isoformat(),
            "end": end.isoformat(),
        },
        "worker_stats": stats,
        "steps": [asdict(step) for step in steps],
        "wall_s": round(time.monotonic() - started, 1),
    }
    path = append_result(NAME, record)
    say(f"result appended to {path}")
    return record


async def apply_quarters(
    args: argparse.Namespace, settings: Settings, redis: Redis, simulation: Simulation, start: datetime, end: datetime
) -> list[Step]:
    """Produce, replay, sweep and measure, quarter by quarter."""
    keys = RedisKeys.from_settings(settings)
    sweeper = RetentionSweeper.from_settings(redis, settings)
    claims = ClaimExpiry(redis, keys, timedelta(days=settings.business.history_retention_days + 2))
    steps: list[Step] = []
    total = 0
    for number, (until, events) in enumerate(quarters(simulation, start, end), 1):
        began = time.monotonic()
        records = [SimRecord(kafka_key(e), orjson.dumps(e), "ok") for e in events]
        # A sink per quarter: leaving it waits for every record's acknowledgement, so the replay
        # that follows reads the whole quarter.
        async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
            await sink.write(records)
        produced = time.monotonic()
        applied = await replay(settings, wipe=False, batch_size=5000, show_progress=False)
        if applied != len(events):
            raise RuntimeError(f"replay applied {applied} records, expected {len(events)}")
        replayed = time.monotonic()
        report = await sweeper.sweep()
        swept = time.monotonic()
        expired = 0
        if not args.no_claim_expiry:
            claims.note(events)
            expired = await claims.expire(until)
        used, dataset = await memory(redis)
        counts, estimate = await key_counts(redis, keys.prefix)
        total += len(events)
        step = Step(
            quarter=number,
            until=until.date().isoformat(),
            events=len(events),
            events_total=total,
            used_memory=used,
            used_memory_dataset=dataset,
            keys=counts,
            estimated_mb=estimate,
            swept=dict(report.deleted) if report else {},
            claims_expired=expired,
            seconds={
                "produce": round(produced - began, 1),
                "replay": round(replayed - produced, 1),
                "sweep": round(swept - replayed, 2),
            },
        )
        steps.append(step)
        rate = len(events) / max(replayed - produced, 1e-9)
        say(
            f"Q{number} to {step.until}: {total:,} events, used_memory {used / MB:,.1f} MB, "
            f"replay {step.seconds['replay']} s ({rate:,.0f}/s), swept {sum(step.swept.values()):,} keys "
            f"in {step.seconds['sweep']} s, claims expired {expired:,}"
        )
    return steps


def table(record: dict[str, Any]) -> str:
    """Two tables: memory and keys by kind after each quarter, then the estimated MB by kind."""
    head = (
        f"{'Q':>2} {'until':<10} {'events':>10} {'used MB':>8} {'data MB':>8} {'day':>7} {'month':>6} "
        f"{'utcday':>7} {'hour':>7} {'minute':>8} {'deals':>7} {'cust':>7} {'claims':>9} {'swept':>8} {'replay s':>8}"
    )
    lines = [head, "-" * len(head)]
    for step in record["steps"]:
        keys = step["keys"]
        lines.append(
            f"{step['quarter']:>2} {step['until']:<10} {step['events_total']:>10,} {step['used_memory'] / MB:>8.1f} "
            f"{step['used_memory_dataset'] / MB:>8.1f} {keys['day']:>7,} {keys['month']:>6,} {keys['utcday']:>7,} "
            f"{keys['hour']:>7,} {keys['minute']:>8,} {keys['deal']:>7,} {keys['cust']:>7,} {keys['seen']:>9,} "
            f"{sum(step['swept'].values()):>8,} {step['seconds']['replay']:>8}"
        )
    kinds = [kind for kind in FAMILIES if any(step.get("estimated_mb", {}).get(kind) for step in record["steps"])]
    head = f"{'Q':>2} {'until':<10} " + " ".join(f"{kind:>7}" for kind in kinds) + "   (estimated MB by kind of key)"
    lines += ["", head, "-" * len(head)]
    for step in record["steps"]:
        mb = step.get("estimated_mb", {})
        lines.append(
            f"{step['quarter']:>2} {step['until']:<10} " + " ".join(f"{mb.get(kind, 0.0):>7.1f}" for kind in kinds)
        )
    return "\n".join(lines)


def last_record() -> dict[str, Any]:
    path = RESULTS_DIR / f"{NAME}.jsonl"
    record: dict[str, Any] = orjson.loads(path.read_bytes().splitlines()[-1])
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory_retention",
        description="Redis memory quarter by quarter over simulated years, with the retention sweeper.",
    )
    parser.add_argument("--managers", type=int, default=500)
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--days", type=int, default=730, help="simulated history, ending now (default 730)")
    parser.add_argument(
        "--activity", type=float, default=0.05, help="scale of calls and meetings per manager (default 0.05)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--history-retention-days",
        type=int,
        default=730,
        help="business.history_retention_days (default 730, the product's); less reaches every horizon sooner",
    )
    parser.add_argument(
        "--month-months", type=int, default=None, help="month buckets kept (default: the fewest that cover it)"
    )
    parser.add_argument("--no-claim-expiry", action="store_true", help="keep every event-id claim")
    parser.add_argument("--show", action="store_true", help="only print the tables of the last recorded run")
    args = parser.parse_args(argv)
    if args.show:
        print(table(last_record()))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = asyncio.run(run(args))
    print(table(record))
    print(f"wall time {record['wall_s']} s; worker stats {record['worker_stats']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
