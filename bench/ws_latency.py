"""Event-to-browser latency: Kafka -> worker -> Redis change feed -> API -> WebSocket clients.

``python -m bench.ws_latency --rate 200 --seconds 20 --clients 1 1000``

For each client count: a fresh topic (one partition, so the worker applies events in order),
consumer group and Redis prefix; the real worker (``python -m streams.worker``) and the API
(``python -m uvicorn dashboard_api.app:create_app --factory``, one process) as child processes;
N WebSocket clients spread over ``--client-procs`` processes (``bench.ws_clients``). Each client
subscribes like a wall display: the company and one of ``--teams`` teams, with a KPI filter.
Events are calls of 100 managers in those teams, produced at a fixed rate; event ``i`` has reached
a client once a company day change shows ``i + 1`` more calls than its snapshot. Latency = that
arrival (wall clock, in the client process) - the moment the producer's ``send`` was called
(wall clock, in this process; same machine).

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

from bench.processes import ChildProcess, CpuWindow
from bench.reporting import append_result, fmt, percentile, ratio, source_digest
from bench.servers import BenchServers, bench_servers, say
from services import kafka
from services.kpis.periods import day_key
from services.settings import Settings
from services.topics import RedisKeys

NAME = "ws_latency"
MANAGERS = 100
COMPANY_DAY_CALLS = re.compile(r'"scope":"c","g":"day","b":"[^"]*","kpis":\{"calls":(\d+)')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def event_value(index: int, tag: str, prefix: str = "lat", teams: int | None = None) -> tuple[bytes, bytes]:
    """A call of one of the bench's managers (in ``teams`` teams; warm-up calls have no team)."""
    manager = f"{prefix}-{index % MANAGERS:03d}"
    event: dict[str, Any] = {
        "event_id": f"{prefix}-{tag}-{index}",
        "type": "call",
        "occurred_at": datetime.now(UTC).isoformat(),
        "manager_id": manager,
        "duration_s": 30,
    }
    if teams:
        event["team_id"] = f"team-{(index % MANAGERS) % teams:02d}"
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


async def warm_up(producer: AIOKafkaProducer, settings: Settings, url: str, tag: str, within: float) -> float:
    """Send one event at a time until a probe client sees it counted: worker assigned, feed flowing."""
    began = time.monotonic()
    async with websockets.connect(url, ping_interval=None, open_timeout=60) as probe:
        await probe.send('{"type": "subscribe", "scopes": ["c"], "kpis": ["calls"]}')
        snapshot = json.loads(await asyncio.wait_for(probe.recv(), 60))
        counted = int(snapshot["scopes"]["c"]["day"]["kpis"]["calls"])
        index = 0
        while time.monotonic() - began < within:
            key, value = event_value(index, tag, "warm")
            await producer.send_and_wait(settings.kafka.events_topic, value, key=key)
            index += 1
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(probe.recv(), max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                found = COMPANY_DAY_CALLS.search(str(raw))
                if found is not None and int(found.group(1)) >= counted + index:
                    return time.monotonic() - began
    raise RuntimeError(f"no change reached the WebSocket client within {within:.0f} s of warm-up")


def read_arrivals(path: Any, values: int) -> array[float]:
    data = array("d")
    with open(path, "rb") as file:
        data.fromfile(file, values)
    return data


class ClientProcesses:
    """The WebSocket clients of one run, spread over child processes (``bench.ws_clients``)."""

    def __init__(self, clients: int, procs: int, events: int, url: str, args: argparse.Namespace, logs: Any) -> None:
        self.clients = clients
        self.events = events
        shares = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
        self.children: list[tuple[asyncio.subprocess.Process, int, Any]] = []
        self.plan = []
        first = 0
        for k, count in enumerate(shares):
            if count:
                self.plan.append((first, count, logs / f"ws{clients}-clients{k}.bin"))
            first += count
        self.url = url
        self.args = args
        self.logs = logs
        self.complete = 0
        self.all_complete = asyncio.Event()
        self.watchers: list[asyncio.Task[None]] = []

    async def start(self) -> list[str]:
        """Start the processes, wait until each has connected and subscribed its clients; the failures."""
        failures: list[str] = []
        for first, count, out in self.plan:
            argv = [
                sys.executable, "-m", "bench.ws_clients", "--url", self.url, "--first", str(first),
                "--count", str(count), "--events", str(self.events), "--teams", str(self.args.teams),
                "--out", str(out), "--connect-concurrency", str(self.args.connect_concurrency),
            ]  # fmt: skip
            if self.args.deflate:
                argv.append("--deflate")
            if not self.args.uvloop:
                argv.append("--no-uvloop")
            log = (self.logs / f"ws{self.clients}-clients-{first}.log").open("ab")
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, limit=1 << 24
            )
            self.children.append((process, count, out))
        for process, _count, _out in self.children:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 600)
            if not line:
                failures.append(f"a client process exited (code {await process.wait()}); see its log")
                continue
            ready = json.loads(line)
            failures += ready.get("failures", [])
            self.watchers.append(asyncio.create_task(self._watch(process)))
        return failures

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if line and json.loads(line).get("complete"):
            self.complete += 1
            if self.complete == len(self.children):
                self.all_complete.set()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _, _ in self.children]

    async def finish(self) -> tuple[list[array[float]], list[int], list[str | None]]:
        """Stop the clients; their arrival times (per client, per event), message counts and close reasons."""
        for task in self.watchers:
            task.cancel()
        arrivals: list[array[float]] = []
        received: list[int] = []
        closed: list[str | None] = []
        for process, count, out in self.children:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
            while True:
                line = await asyncio.wait_for(process.stdout.readline(), 120)
                if not line:
                    raise RuntimeError("a client process ended without its results")
                done = json.loads(line)
                if done.get("done"):
                    break
            await process.wait()
            data = await asyncio.to_thread(read_arrivals, out, count * self.events)
            arrivals += [data[k * self.events : (k + 1) * self.events] for k in range(count)]
            received += done["received"]
            closed += done["closed"]
        return arrivals, received, closed

    async def stop(self) -> None:
        for process, _, _ in self.children:
            if process.returncode is None:
                process.kill()
                await process.wait()


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
        api={"port": port, "auth": "off", "ws_client_queue": 10_000},
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
    api_args = ["--host", "127.0.0.1", "--port", str(port)]
    if args.profile_api:
        api_module, api_args = "bench.profiled_api", [str(logs / f"ws{clients}-api.prof"), *api_args]
    else:
        api_module = "uvicorn"
        api_args = ["dashboard_api.app:create_app", "--factory", *api_args]
        api_args += ["--log-level", "warning", "--backlog", "4096"]
    api = ChildProcess("api", api_module, api_args, settings, logs / f"ws{clients}-api.log").start()
    events = int(args.rate * args.seconds)
    procs = max(1, min(args.client_procs, clients))
    population = ClientProcesses(clients, procs, events, f"ws://127.0.0.1:{port}/ws", args, logs)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0, acks=1)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", api, 60)
        await producer.start()
        warm_s = await warm_up(producer, settings, f"ws://127.0.0.1:{port}/ws", tag, 90)
        say(f"[{clients} clients] pipeline warm after {warm_s:.1f} s; connecting clients in {procs} process(es)")
        began = time.monotonic()
        failures = await population.start()
        figures.connect_s = time.monotonic() - began
        if failures:
            figures.why_not.append(f"{len(failures)}+ clients could not connect: {failures[0]}")
            return figures
        say(f"[{clients} clients] connected in {figures.connect_s:.1f} s; sending {events:,} events at {args.rate:g}/s")
        await asyncio.sleep(1.0)
        baseline = await company_day_calls(settings)

        pids: dict[str, int | None] = {
            "worker": worker.pid,
            "api": api.pid,
            "redis": servers.redis_pid(),
            "kafka": servers.kafka_pid(),
        }
        pids.update({f"clients{k}": pid for k, pid in enumerate(population.pids)})
        cpu = CpuWindow(pids)
        cpu.begin()
        own_cpu = time.process_time()  # this process only: CpuWindow would add its children (worker, API, clients)
        window_began = time.perf_counter()

        sent_at = array("d", [math.nan]) * events
        pending = []
        lateness = 0.0
        start = time.perf_counter() + 0.05
        next_progress = time.monotonic() + 5
        for index in range(events):
            target = start + index / args.rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = event_value(index, tag, teams=args.teams)
            now = time.perf_counter()
            lateness = max(lateness, now - target)
            sent_at[index] = time.time()
            pending.append(await producer.send(settings.kafka.events_topic, value, key=key))
            if time.monotonic() >= next_progress:
                say(f"[{clients} clients] sent {index + 1:,}/{events:,}")
                next_progress = time.monotonic() + 5
        await asyncio.gather(*pending)
        figures.send_lateness_max_ms = lateness * 1000
        try:
            await asyncio.wait_for(population.all_complete.wait(), args.drain)
        except TimeoutError:
            pass
        figures.window_s = time.perf_counter() - window_began
        used = cpu.end()
        client_cpu = [v for k, v in used.items() if k.startswith("clients") and v is not None]
        figures.cpu_s = {k: v for k, v in used.items() if not k.startswith("clients")}
        figures.cpu_s["clients"] = sum(client_cpu) if client_cpu else None
        figures.cpu_s["producer"] = time.process_time() - own_cpu
        arrivals, received, closed = await population.finish()
        figures.messages_per_client = sum(received) / clients
        figures.messages_per_s_all_clients = sum(received) / figures.window_s
        figures.events = events
        summarize(figures, arrivals, sent_at, closed, args.max_p99)
        commits = await commit_times(settings, events, baseline)
        split_latency(figures, arrivals, sent_at, commits)
        return figures
    except Exception as exc:  # a failed run is reported; the next count still runs
        figures.why_not.append(f"run failed: {exc!r}"[:2000])
        return figures
    finally:
        await population.stop()
        await producer.stop()
        api.stop()
        worker.stop()


async def company_day_calls(settings: Settings) -> int:
    """The company's calls today so far (the warm-up's), from Redis."""
    redis = Redis.from_url(settings.redis.url)
    try:
        key = RedisKeys.from_settings(settings).bucket("c", "day", day_key(datetime.now(UTC).date()))
        value = await redis.hget(key, "calls")
    finally:
        await redis.aclose()
    return int(value or 0)


def summarize(
    figures: RunFigures,
    arrivals: list[array[float]],
    sent_at: array[float],
    closed: list[str | None],
    max_p99: float,
) -> None:
    latencies: list[float] = []
    delivered = 0
    worst_p99 = 0.0
    events = len(sent_at)
    for index, mine_at in enumerate(arrivals):
        mine = [mine_at[i] - sent_at[i] for i in range(events) if not math.isnan(mine_at[i])]
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
    expected = events * len(arrivals)
    figures.delivered_share = delivered / expected if expected else 0.0
    figures.disconnected = sum(1 for c in closed if c is not None)
    if figures.disconnected:
        reasons = {c for c in closed if c}
        figures.why_not.append(f"{figures.disconnected} clients were disconnected ({sorted(reasons)[:3]})")
    if delivered < expected:
        figures.why_not.append(f"only {delivered:,} of {expected:,} (client, event) arrivals")
    if figures.p99_ms is not None and figures.p99_ms > max_p99 * 1000:
        figures.why_not.append(f"p99 {figures.p99_ms:,.0f} ms is over {max_p99 * 1000:,.0f} ms: not keeping up")
    figures.works = not figures.why_not


async def commit_times(settings: Settings, events: int, baseline: int) -> array[float]:
    """Wall time (s) at which the worker committed each event, from the company day calls in the change feed."""
    committed = array("d", [math.nan]) * events
    redis = Redis.from_url(settings.redis.url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(  # type: ignore[assignment]
            RedisKeys.from_settings(settings).changes
        )
    finally:
        await redis.aclose()
    done = 0
    for _id, fields in entries:
        entry = orjson.loads(fields[b"data"])
        for bucket in entry.get("buckets", ()):
            if bucket.get("scope") == "c" and bucket.get("g") == "day":
                upto = min(int(bucket["m"].get("calls", 0)) - baseline, events)
                for index in range(max(done, 0), upto):
                    committed[index] = entry["committed_ms"] / 1000
                done = max(done, upto)
    return committed


def split_latency(
    figures: RunFigures, arrivals: list[array[float]], sent_at: array[float], committed: array[float]
) -> None:
    """Where the latency goes: send -> commit in Redis, and commit -> client."""
    events = len(sent_at)
    to_commit = sorted(committed[i] - sent_at[i] for i in range(events) if not math.isnan(committed[i]))
    to_client: list[float] = []
    for mine in arrivals:
        to_client += [
            mine[i] - committed[i] for i in range(events) if not math.isnan(mine[i]) and not math.isnan(committed[i])
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
            "teams": args.teams,
            "client_procs": args.client_procs,
            "subscription": "c + one team, KPI filter calls, meetings, deals_won, revenue, win_rate, pipeline",
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
        f"\nWebSocket latency: {events:,} events at {args.rate:g}/s ({args.seconds:g} s), "
        f"calls of {MANAGERS} managers; "
        f"every client on the company and one of {args.teams} teams, KPI filter; {args.client_procs} client "
        f"process(es); compression {'deflate' if args.deflate else 'off'}"
    )
    print("(machine: 2 cores shared by the broker, Redis, worker, API and all client processes; compare ratios)\n")
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
            "Servers: the bench's own Kafka (127.0.0.1:22092) and Redis (:22379) in .local/bench, started and "
            "stopped by the run, unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL name others. Child logs go to "
            ".local/bench/logs/<run id>/. Results: bench/results/ws_latency.jsonl. See bench/README.md."
        ),
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send (default 20)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1], help="client counts to run, e.g. 1 1000 (default 1)"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partitions of the fresh topic (default 1: events applied in order, which the arrival check needs)",
    )
    parser.add_argument("--teams", type=int, default=10, help="teams the events and client subscriptions use (10)")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="processes the WebSocket clients are spread over (default 2, one per core)",
    )
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
        help="clients connecting and subscribing at once, per client process (default 50; the API's Redis pool "
        "holds 100)",
    )
    parser.add_argument(
        "--warm-broker",
        type=float,
        default=10.0,
        help="seconds of unmeasured traffic through the fresh broker before the first run (default 10)",
    )
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument(
        "--profile-api",
        action="store_true",
        help="run the API under cProfile (slower); the profile goes to the logs folder (ws<N>-api.prof)",
    )
    parser.add_argument(
        "--no-uvloop", dest="uvloop", action="store_false", help="clients and producer on the stock asyncio loop"
    )
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
