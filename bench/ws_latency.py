"""Event-to-browser latency: Kafka -> worker -> Redis change feed -> API -> WebSocket clients.

``python -m bench.ws_latency --rate 200 --seconds 20 --clients 1 1000``

For each client count: a fresh topic, consumer group and Redis prefix; the real worker
(``python -m streams.worker``) and the API (``python -m uvicorn dashboard_api.app:create_app
--factory``) as child processes; N WebSocket clients in this process, all subscribed to every
scope (``"*"``). Events are produced at a fixed rate, each a ``call`` of its own fresh manager
(``lat-000123``), so the first ``change`` of scope ``m:lat-000123`` with ``g == "day"`` at a
client identifies exactly that event. Latency = arrival at the client - the moment the
producer's ``send`` was called (one clock: the producer and the clients share this process).

A run "works" when every client receives every event, none is disconnected, and p99 stays
under ``--max-p99``. When the largest count asked for does not work, smaller counts are tried
(``--search-steps``) to find the largest that does. Ratios are against the first (smallest)
count of the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import socket
import sys
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import websockets
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from bench.processes import ChildProcess, CpuWindow
from bench.reporting import append_result, fmt, percentile, ratio, source_digest
from bench.servers import BenchServers, bench_servers, say
from services import kafka
from services.settings import Settings
from services.topics import RedisKeys

NAME = "ws_latency"
DAY_CHANGE = re.compile(r'"scope":"m:lat-(\d+)","g":"day"')
WARM_CHANGE = re.compile(r'"scope":"m:warm-(\d+)"')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Tracker:
    """What all clients of a run have received: per client and event, the arrival time."""

    def __init__(self, clients: int, events: int) -> None:
        self.events = events
        self.arrivals = [array("d", [math.nan]) * events for _ in range(clients)]
        self.missing = [events] * clients
        self.complete = 0
        self.all_complete = asyncio.Event()
        self.warm_seen: set[int] = set()
        self.warm_event = asyncio.Event()


class LatencyClient:
    """One WebSocket client: subscribes to every scope and notes when each event's day change arrives."""

    def __init__(self, index: int, tracker: Tracker) -> None:
        self.index = index
        self.tracker = tracker
        self.received = 0
        self.closed: str | None = None
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, url: str, *, deflate: bool) -> None:
        self.ws = await websockets.connect(
            url,
            compression="deflate" if deflate else None,
            ping_interval=None,  # the server sends its own heartbeat; client pings would only add load
            max_size=None,
            open_timeout=120,
            close_timeout=5,
        )
        await self.ws.send('{"type": "subscribe", "scopes": "*"}')
        first = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        if first.get("type") != "snapshot":
            raise RuntimeError(f"expected a snapshot after subscribing, got {str(first)[:200]}")
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        tracker = self.tracker
        arrivals = tracker.arrivals[self.index]
        clock = time.perf_counter
        try:
            async for raw in self.ws:
                now = clock()
                self.received += 1
                found = DAY_CHANGE.search(raw, 0, 200)
                if found is not None:
                    event = int(found.group(1))
                    if event < tracker.events and math.isnan(arrivals[event]):
                        arrivals[event] = now
                        tracker.missing[self.index] -= 1
                        if tracker.missing[self.index] == 0:
                            tracker.complete += 1
                            if tracker.complete == len(tracker.missing):
                                tracker.all_complete.set()
                elif self.index == 0:
                    warm = WARM_CHANGE.search(raw, 0, 200)
                    if warm is not None:
                        tracker.warm_seen.add(int(warm.group(1)))
                        tracker.warm_event.set()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            self.closed = f"{frame.code} {frame.reason}" if frame is not None else "no close frame"
        else:
            self.closed = "closed by the server"

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:  # closing many sockets at the end of a run: nothing to do
                pass


@dataclass
class RunFigures:
    clients: int
    works: bool = False
    why_not: list[str] = field(default_factory=list)
    events: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    client0_p50_ms: float | None = None
    client0_p99_ms: float | None = None
    worst_client_p99_ms: float | None = None
    delivered_share: float = 0.0
    disconnected: int = 0
    messages_per_client: float = 0.0
    messages_per_s_all_clients: float = 0.0
    send_to_commit_p50_ms: float | None = None
    """Producer send -> the worker's commit in Redis (Kafka, faust, batching, processing): from the change feed."""
    send_to_commit_p99_ms: float | None = None
    commit_to_client_p50_ms: float | None = None
    """The commit in Redis -> arrival at a client (API read of the feed, fan-out, WebSocket, client loop)."""
    commit_to_client_p99_ms: float | None = None
    send_lateness_max_ms: float = 0.0
    connect_s: float = 0.0
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    window_s: float = 0.0


def event_value(index: int, tag: str, prefix: str = "lat") -> tuple[bytes, bytes]:
    manager = f"{prefix}-{index:06d}"
    event = {
        "event_id": f"{prefix}-{tag}-{index}",
        "type": "call",
        "occurred_at": datetime.now(UTC).isoformat(),
        "manager_id": manager,
        "duration_s": 30,
    }
    return manager.encode(), orjson.dumps(event)


async def wait_healthy(base_url: str, api: ChildProcess, within: float) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if not api.running():
                raise RuntimeError(f"the API exited; log tail:\n{api.log_tail()}")
            try:
                if (await http.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the API did not answer /healthz within {within:.0f} s; log tail:\n{api.log_tail()}")


async def warm_up(producer: AIOKafkaProducer, settings: Settings, tracker: Tracker, tag: str, within: float) -> float:
    """Send one event at a time until the first client sees its change: worker assigned, feed flowing."""
    began = time.monotonic()
    index = 0
    while time.monotonic() - began < within:
        key, value = event_value(index, tag, "warm")
        await producer.send_and_wait(settings.kafka.events_topic, value, key=key)
        try:
            await asyncio.wait_for(tracker.warm_event.wait(), 3.0)
        except TimeoutError:
            pass
        tracker.warm_event.clear()
        if index in tracker.warm_seen:
            return time.monotonic() - began
        index += 1
    raise RuntimeError(f"no change reached the WebSocket client within {within:.0f} s of warm-up")


async def warm_broker(servers: BenchServers, rate: float, seconds: float, run_id: str) -> None:
    """Produce and consume at the bench's rate for a while, unmeasured: a fresh broker is still JIT-compiling,
    which would slow the first (baseline) run more than the later ones."""
    settings = servers.settings.with_overrides(kafka={"events_topic": f"bench.ws.warm.{run_id}"})
    topic = settings.kafka.events_topic
    await kafka.ensure_topics(settings, [topic], 1)
    say(f"warming the broker up for {seconds:g} s")
    consumer = kafka.consumer(settings, topic, group_id=f"bench-warm-{run_id}", auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()

    async def drain() -> None:
        while True:
            await consumer.getmany(timeout_ms=500)

    draining = asyncio.create_task(drain())
    try:
        began = time.perf_counter()
        index = 0
        while time.perf_counter() - began < seconds:
            delay = began + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = event_value(index, run_id, "warm")
            await producer.send(topic, value, key=key)
            index += 1
    finally:
        draining.cancel()
        await producer.stop()
        await consumer.stop()


async def measure(servers: BenchServers, clients: int, args: argparse.Namespace, run_id: str) -> RunFigures:
    figures = RunFigures(clients)
    tag = f"{run_id}-{clients}"
    port = free_port()
    settings = servers.fresh(
        f"ws{clients}",
        kafka={
            "events_topic": f"bench.ws.{tag}",
            "dlq_topic": f"bench.ws.dlq.{tag}",
            "updates_topic": f"bench.ws.updates.{tag}",
            "partitions": args.partitions,
        },
        api={"port": port},
    )
    await kafka.ensure_topics(settings, [settings.kafka.events_topic, settings.kafka.dlq_topic], args.partitions)
    logs = servers.logs
    worker = ChildProcess(
        "worker",
        "streams.worker",
        ["--loglevel", "info", "--web-port", "47066"],
        settings,
        logs / f"ws{clients}-worker.log",
    ).start()
    api = ChildProcess(
        "api",
        "uvicorn",
        [
            "dashboard_api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ],
        settings,
        logs / f"ws{clients}-api.log",
    ).start()
    events = int(args.rate * args.seconds)
    tracker = Tracker(clients, events)
    population = [LatencyClient(index, tracker) for index in range(clients)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0, acks=1)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", api, 60)
        await producer.start()
        await population[0].connect(url, deflate=args.deflate)
        warm_s = await warm_up(producer, settings, tracker, tag, 90)
        say(f"[{clients} clients] pipeline warm after {warm_s:.1f} s; connecting clients")
        began = time.monotonic()
        gate = asyncio.Semaphore(args.connect_concurrency)

        async def connect(client: LatencyClient) -> None:
            async with gate:
                await client.connect(url, deflate=args.deflate)

        results = await asyncio.gather(*(connect(c) for c in population[1:]), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        figures.connect_s = time.monotonic() - began
        if failures:
            figures.why_not.append(f"{len(failures)} of {clients} clients could not connect: {failures[0]!r}")
            return figures
        say(f"[{clients} clients] connected in {figures.connect_s:.1f} s; sending {events:,} events at {args.rate:g}/s")
        await asyncio.sleep(1.0)

        cpu = CpuWindow(
            {
                "worker": worker.pid,
                "api": api.pid,
                "clients": os.getpid(),
                "redis": servers.redis_pid(),
                "kafka": servers.kafka_pid(),
            }
        )
        cpu.begin()
        received_before = sum(c.received for c in population)
        window_began = time.perf_counter()

        sent_at = array("d", [math.nan]) * events
        wall_offset = time.time() - time.perf_counter()
        pending = []
        lateness = 0.0
        start = time.perf_counter() + 0.05
        next_progress = time.monotonic() + 5
        for index in range(events):
            target = start + index / args.rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = event_value(index, tag)
            now = time.perf_counter()
            lateness = max(lateness, now - target)
            sent_at[index] = now
            pending.append(await producer.send(settings.kafka.events_topic, value, key=key))
            if time.monotonic() >= next_progress:
                slowest = events - max(tracker.missing)
                say(f"[{clients} clients] sent {index + 1:,}/{events:,}; the slowest client has {slowest:,}")
                next_progress = time.monotonic() + 5
        await asyncio.gather(*pending)
        figures.send_lateness_max_ms = lateness * 1000
        try:
            await asyncio.wait_for(tracker.all_complete.wait(), args.drain)
        except TimeoutError:
            pass
        figures.window_s = time.perf_counter() - window_began
        figures.cpu_s = cpu.end()
        received = sum(c.received for c in population) - received_before
        figures.messages_per_client = received / clients
        figures.messages_per_s_all_clients = received / figures.window_s
        figures.events = events
        summarize(figures, tracker, sent_at, population, args.max_p99)
        commits = await commit_times(settings, events)
        split_latency(figures, tracker, sent_at, wall_offset, commits)
        return figures
    except Exception as exc:  # a failed run is reported; the next count still runs
        figures.why_not.append(f"run failed: {exc!r}"[:2000])
        return figures
    finally:
        await asyncio.gather(*(c.close() for c in population), return_exceptions=True)
        await producer.stop()
        api.stop()
        worker.stop()


def summarize(
    figures: RunFigures, tracker: Tracker, sent_at: array[float], population: list[LatencyClient], max_p99: float
) -> None:
    latencies: list[float] = []
    delivered = 0
    worst_p99 = 0.0
    for index, arrivals in enumerate(tracker.arrivals):
        mine = [arrivals[i] - sent_at[i] for i in range(tracker.events) if not math.isnan(arrivals[i])]
        delivered += len(mine)
        mine.sort()
        if index == 0:
            figures.client0_p50_ms = _ms(percentile(mine, 0.5))
            figures.client0_p99_ms = _ms(percentile(mine, 0.99))
        p99 = percentile(mine, 0.99)
        if p99 is not None:
            worst_p99 = max(worst_p99, p99)
        latencies += mine
    latencies.sort()
    figures.p50_ms = _ms(percentile(latencies, 0.5))
    figures.p90_ms = _ms(percentile(latencies, 0.9))
    figures.p99_ms = _ms(percentile(latencies, 0.99))
    figures.max_ms = _ms(latencies[-1] if latencies else None)
    figures.worst_client_p99_ms = _ms(worst_p99) if latencies else None
    expected = tracker.events * len(population)
    figures.delivered_share = delivered / expected if expected else 0.0
    figures.disconnected = sum(1 for c in population if c.closed is not None)
    if figures.disconnected:
        reasons = {c.closed for c in population if c.closed}
        figures.why_not.append(f"{figures.disconnected} clients were disconnected ({sorted(reasons)[:3]})")
    if delivered < expected:
        figures.why_not.append(f"only {delivered:,} of {expected:,} (client, event) changes arrived")
    if figures.p99_ms is not None and figures.p99_ms > max_p99 * 1000:
        figures.why_not.append(f"p99 {figures.p99_ms:,.0f} ms is over {max_p99 * 1000:,.0f} ms: not keeping up")
    figures.works = not figures.why_not


async def commit_times(settings: Settings, events: int) -> array[float]:
    """Wall time (s) at which the worker committed each event's day bucket, from the Redis change feed."""
    committed = array("d", [math.nan]) * events
    redis = Redis.from_url(settings.redis.url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(  # type: ignore[assignment]
            RedisKeys.from_settings(settings).changes
        )
    finally:
        await redis.aclose()
    for _id, fields in entries:
        entry = orjson.loads(fields[b"data"])
        for bucket in entry.get("buckets", ()):
            scope = bucket.get("scope", "")
            if bucket.get("g") == "day" and scope.startswith("m:lat-"):
                index = int(scope[6:])
                if index < events and math.isnan(committed[index]):
                    committed[index] = entry["committed_ms"] / 1000
    return committed


def split_latency(
    figures: RunFigures, tracker: Tracker, sent_at: array[float], wall_offset: float, committed: array[float]
) -> None:
    """Where the latency goes: send -> commit in Redis, and commit -> client."""
    to_commit = sorted(
        committed[i] - (sent_at[i] + wall_offset) for i in range(tracker.events) if not math.isnan(committed[i])
    )
    to_client: list[float] = []
    for arrivals in tracker.arrivals:
        to_client += [
            arrivals[i] + wall_offset - committed[i]
            for i in range(tracker.events)
            if not math.isnan(arrivals[i]) and not math.isnan(committed[i])
        ]
    to_client.sort()
    figures.send_to_commit_p50_ms = _ms(percentile(to_commit, 0.5))
    figures.send_to_commit_p99_ms = _ms(percentile(to_commit, 0.99))
    figures.commit_to_client_p50_ms = _ms(percentile(to_client, 0.5))
    figures.commit_to_client_p99_ms = _ms(percentile(to_client, 0.99))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
    counts = sorted(set(args.clients))
    tried: list[RunFigures] = []
    code_at_start = source_digest()
    with bench_servers(run_id) as servers:
        if args.warm_broker > 0:
            await warm_broker(servers, args.rate, args.warm_broker, run_id)
        for clients in counts:
            say(f"run with {clients} client(s) ...")
            figures = await measure(servers, clients, args, run_id)
            report(figures)
            tried.append(figures)
        top = tried[-1]
        if not top.works and len(counts) > 0 and args.search_steps > 0 and top.clients > 1:
            good = max((f.clients for f in tried if f.works), default=1)
            bad = top.clients
            for _ in range(args.search_steps):
                if bad - good <= max(1, good // 10):
                    break
                candidate = max(good + 1, round(math.sqrt(good * bad)))  # geometric midpoint
                say(f"{bad} clients did not work; trying {candidate}")
                figures = await measure(servers, candidate, args, run_id)
                report(figures)
                tried.append(figures)
                if figures.works:
                    good = candidate
                else:
                    bad = candidate
    code_seen = {"start": code_at_start, "end": source_digest()}
    if code_seen["start"] != code_seen["end"]:
        say("WARNING: the code under test changed during the run; the runs may not be comparable")
    baseline = tried[0]
    largest_working = max((f.clients for f in tried if f.works), default=None)
    ratios = {
        f.clients: {
            "p50": ratio(f.p50_ms, baseline.p50_ms),
            "p99": ratio(f.p99_ms, baseline.p99_ms),
        }
        for f in tried[1:]
    }
    record = {
        "run_id": run_id,
        "parameters": {
            "rate": args.rate,
            "seconds": args.seconds,
            "clients": args.clients,
            "partitions": args.partitions,
            "deflate": args.deflate,
            "warm_broker_s": args.warm_broker,
            "connect_concurrency": args.connect_concurrency,
            "max_p99_s": args.max_p99,
            "uvloop_clients": args.uvloop,
            "worker_batch_size": servers.settings.worker.batch_size,
            "worker_batch_within_s": servers.settings.worker.batch_within_s,
            "external_servers": servers.external,
        },
        "runs": [asdict(f) for f in tried],
        "baseline_clients": baseline.clients,
        "ratios": {str(k): v for k, v in ratios.items()},
        "largest_working_clients": largest_working,
        "source_digest": code_seen,
        "logs": str(servers.logs),
    }
    path = append_result(NAME, record)
    print_summary(args, tried, ratios, largest_working, path)
    return 0 if all(f.works for f in tried if f.clients in counts[:1]) else 1


def report(figures: RunFigures) -> None:
    state = "works" if figures.works else "DOES NOT WORK: " + "; ".join(figures.why_not)
    say(
        f"[{figures.clients} clients] p50 {fmt(figures.p50_ms, ',.1f')} ms, p99 {fmt(figures.p99_ms, ',.1f')} ms, "
        f"max {fmt(figures.max_ms, ',.1f')} ms; {state}"
    )


def print_summary(
    args: argparse.Namespace,
    tried: list[RunFigures],
    ratios: dict[int, dict[str, float | None]],
    largest_working: int | None,
    path: Any,
) -> None:
    events = int(args.rate * args.seconds)
    print(
        f"\nWebSocket latency: {events:,} events at {args.rate:g}/s ({args.seconds:g} s), each its own manager; "
        f"every client subscribed to '*'; compression {'deflate' if args.deflate else 'off'}"
    )
    print("(machine: 2 cores shared by the broker, Redis, worker, API and all clients; compare ratios)\n")
    print(
        f"  {'clients':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'delivered':>9} "
        f"{'msgs/s':>8}  verdict"
    )
    for f in tried:
        verdict = "works" if f.works else "no: " + "; ".join(w.splitlines()[0][:120] for w in f.why_not)
        print(
            f"  {f.clients:>7} {fmt(f.p50_ms, ',.1f'):>8} {fmt(f.p90_ms, ',.1f'):>8} {fmt(f.p99_ms, ',.1f'):>8} "
            f"{fmt(f.max_ms, ',.1f'):>8} {f.delivered_share:>9.1%} {fmt(f.messages_per_s_all_clients):>8}  {verdict}"
        )
    print("\n  where it goes (p50 / p99 ms): send -> worker commit in Redis | commit -> client")
    for f in tried:
        if f.send_to_commit_p50_ms is not None:
            cpu = ", ".join(f"{name}={fmt(used, '.1f')}" for name, used in f.cpu_s.items())
            print(
                f"  {f.clients:>7}  {fmt(f.send_to_commit_p50_ms, ',.1f')} / {fmt(f.send_to_commit_p99_ms, ',.1f')}"
                f"  |  {fmt(f.commit_to_client_p50_ms, ',.1f')} / {fmt(f.commit_to_client_p99_ms, ',.1f')}"
                f"   (cpu s in the {f.window_s:.0f} s window: {cpu})"
            )
    if ratios:
        print(f"\n  ratios against {tried[0].clients} client(s):")
        for clients, r in ratios.items():
            print(
                f"    p50({clients})/p50({tried[0].clients}) = {fmt(r['p50'], '.2f')}   "
                f"p99({clients})/p99({tried[0].clients}) = {fmt(r['p99'], '.2f')}"
            )
    asked = max(args.clients)
    if largest_working is not None and largest_working < asked:
        print(f"\n  {asked} clients did not work here; the largest count that worked: {largest_working}")
    print(f"\n  results appended to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_latency",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Servers: the bench's own Kafka (127.0.0.1:49092) and Redis (:46379) in .local/bench, started and "
            "stopped by the run, unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL name others. Child logs go to "
            ".local/bench/logs/<run id>/. Results: bench/results/ws_latency.jsonl. See bench/README.md."
        ),
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send (default 20)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1], help="client counts to run, e.g. 1 1000 (default 1)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the fresh topic (default 4)")
    parser.add_argument(
        "--max-p99", type=float, default=1.0, help="p99 in seconds above which a run does not count as working (1.0)"
    )
    parser.add_argument(
        "--search-steps",
        type=int,
        default=4,
        help="when the largest count does not work, how many counts between to try (default 4; 0: none)",
    )
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for the last changes (default 15)")
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=50,
        help="clients connecting and subscribing at once (default 50; the API's Redis pool holds 100)",
    )
    parser.add_argument(
        "--warm-broker",
        type=float,
        default=10.0,
        help="seconds of unmeasured traffic through the fresh broker before the first run (default 10)",
    )
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false", help="clients on the stock asyncio loop")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or min(args.clients) < 1:
        parser.error("--rate, --seconds and --clients must be positive")
    if args.uvloop:
        try:
            import uvloop

            return uvloop.run(run(args))
        except ImportError:
            say("uvloop is not installed: clients run on the stock asyncio loop")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
