"""Freshness after a crash: from SIGKILL of the stream worker to the first batch its replacement commits.

``python -m bench.restart_freshness --kills 20``

A stream of simulated events is produced at ``--rate`` events/s into a fresh topic while the real
stream worker (``python -m streams.worker``) consumes it. ``--kills`` times, the worker is SIGKILLed
and started again at once; the time from the kill to the first batch the replacement commits (the
Redis stats hash grows past its value at the kill, polled every 20 ms) is one figure. Both ways of
joining the consumer group are measured in the same run, each with a fresh topic, group and Redis
prefix: ``dynamic`` (``membership.static = false``: the replacement waits until the broker ends the
dead member's session) is the baseline, ``static`` (the default: the replacement takes the dead
member's partitions back as the same ``group.instance.id``). The ratio is static p50 / dynamic p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bench.processes import ChildProcess
from bench.reporting import append_result, fmt, percentile, ratio
from bench.servers import BenchServers, bench_servers, say
from services.kafka import ensure_product_topics
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys

NAME = "restart_freshness"
MODES = ("dynamic", "static")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restart_freshness",
        description="Time from SIGKILL of the stream worker to its replacement's first committed batch, "
        "with dynamic and with static group membership.",
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per mode (default 20)")
    parser.add_argument("--rate", type=int, default=1000, help="events produced per second meanwhile (default 1000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the events topic (default 4)")
    parser.add_argument(
        "--session-timeout", type=float, default=None, help="consumer group session timeout, s (default: the settings')"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="which of dynamic,static to run (default both)")
    parser.add_argument("--bound", type=float, default=120.0, help="give up on one restart after this many s")
    return parser


async def accounted(redis: Redis, keys: RedisKeys) -> int:
    return sum(int(v) for v in (await redis.hgetall(keys.worker_stats)).values())


async def produce_forever(settings: Settings, rate: int) -> None:
    """Simulated events at about ``rate``/s until cancelled (a stream in progress, not a backlog)."""
    config = SimulationConfig.from_business(settings.business, managers=12, teams=3)
    records = Simulation(config, seed=7).records(datetime.now(UTC) - timedelta(days=5))
    chunk = max(1, rate // 10)
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        while True:
            batch = [next(records) for _ in range(chunk)]
            await sink.write(batch)
            await asyncio.sleep(0.1)  # pacing the producer


async def wait_past(redis: Redis, keys: RedisKeys, count: int, within: float) -> float | None:
    """Seconds until the stats pass ``count`` (polled every 20 ms), None after ``within``."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if await accounted(redis, keys) > count:
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    return None


async def measure(servers: BenchServers, mode: str, args: argparse.Namespace) -> list[float | None]:
    membership: dict[str, object] = {"static": mode == "static"}
    if args.session_timeout is not None:
        membership["session_timeout_s"] = args.session_timeout
    unique = uuid.uuid4().hex[:6]
    settings = servers.fresh(
        f"restart-{mode}",
        kafka={"events_topic": f"bench.restart.{unique}", "partitions": args.partitions},
        worker={"batch_size": 500, "batch_within_s": 0.05},
        membership=membership,
    )
    await ensure_product_topics(settings)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    log = servers.logs / f"worker-{mode}.log"
    worker = ChildProcess(f"worker-{mode}", "streams.worker", ["--loglevel", "info"], settings, log)
    producer = asyncio.create_task(produce_forever(settings, args.rate))
    figures: list[float | None] = []
    try:
        worker.start()
        if await wait_past(redis, keys, 0, args.bound) is None:
            raise SystemExit(f"{mode}: the worker committed nothing within {args.bound} s; see {log}")
        for kill in range(1, args.kills + 1):
            await asyncio.sleep(1.0)  # let the worker run a moment between kills (pacing)
            assert worker.process is not None
            worker.process.kill()
            killed = time.monotonic()
            worker.process.wait()
            before = await accounted(redis, keys)
            worker.start()
            waited = await wait_past(redis, keys, before, args.bound)
            figure = None if waited is None else time.monotonic() - killed
            figures.append(figure)
            say(f"{mode}: kill {kill}/{args.kills}: first commit {fmt(figure, '.2f')} s after the kill")
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        worker.stop()
        keys_to_delete = [key async for key in redis.scan_iter(match=f"{settings.redis.key_prefix}*")]
        if keys_to_delete:
            await redis.delete(*keys_to_delete)
        await redis.aclose()
    return figures


def summary(figures: list[float | None]) -> dict[str, float | int | None]:
    done = sorted(f for f in figures if f is not None)
    return {
        "kills": len(figures),
        "gave_up": len(figures) - len(done),
        "p50_s": statistics.median(done) if done else None,
        "p90_s": percentile(done, 0.9),
        "max_s": done[-1] if done else None,
        "min_s": done[0] if done else None,
    }


async def run(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(sorted(unknown))}: choose from {', '.join(MODES)}")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + NAME
    results: dict[str, dict[str, float | int | None]] = {}
    raw: dict[str, list[float | None]] = {}
    with bench_servers(run_id) as servers:
        for mode in modes:
            say(f"{mode}: {args.kills} SIGKILLs of the worker at {args.rate} events/s")
            raw[mode] = await measure(servers, mode, args)
            results[mode] = summary(raw[mode])
        session = (
            servers.settings.membership.session_timeout_s if args.session_timeout is None else args.session_timeout
        )
    static_vs_dynamic = ratio(results.get("static", {}).get("p50_s"), results.get("dynamic", {}).get("p50_s"))
    print(f"kill -> first commit of the replacement ({args.kills} kills, {args.rate} events/s, session {session} s)")
    print(f"{'mode':8} {'p50 s':>7} {'p90 s':>7} {'max s':>7} {'gave up':>8}")
    for mode, figures in results.items():
        print(
            f"{mode:8} {fmt(figures['p50_s'], '.2f'):>7} {fmt(figures['p90_s'], '.2f'):>7} "
            f"{fmt(figures['max_s'], '.2f'):>7} {figures['gave_up']:>8}"
        )
    print(f"static p50 / dynamic p50 = {fmt(static_vs_dynamic, '.3f')}")
    path = append_result(
        NAME,
        {
            "params": {**vars(args), "session_timeout_s": session},
            "results": results,
            "raw_s": raw,
            "ratios": {"static_p50_over_dynamic_p50": static_vs_dynamic},
            "logs": str(servers.logs),
        },
    )
    say(f"results appended to {path}")
    return 0 if all(r["gave_up"] == 0 for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
