"""Threshold-crossing latency: from producing the event that crosses a rule's threshold to the
receiver's HTTP request.

``python -m bench.alert_latency --crossings 300 --rate 5``

One fresh topic set, consumer groups and Redis prefix; the real stream worker (``python -m
streams.worker``) and the real alerts worker (``python -m alerts.worker``) as child processes; a
local HTTP server in this process stands in for the Slack/webhook receiver. The one rule watches
``calls > 0`` of every manager for the day, with ``for: 0`` and ``group_wait: 0`` (grouped by
alertname and scope, so each alert is its own message). Each crossing is one ``call`` of a fresh
manager (``alat-000123``): it moves that manager from no value to 1 call, and the webhook message
naming ``manager: alat-000123`` identifies it. Latency = arrival of the HTTP request - the moment
the producer's ``send`` was called (one clock: producer and receiver share this process).

Baseline of the same run: the event-to-state-commit time of the same events (the stream worker's
commit of the event's day bucket, from the Redis change feed), and the split after it: commit ->
the alerts worker's evaluation (its history entry's ``at``) -> the HTTP request. The ratio
alert p50 / commit p50 says what alerting adds on top of the KPI pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import sys
import time
import uuid
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from bench.processes import ChildProcess, CpuWindow
from bench.reporting import append_result, fmt, percentile, ratio, source_digest
from bench.servers import BenchServers, bench_servers, say
from services import kafka
from services.settings import Settings
from services.topics import AlertNames, RedisKeys

NAME = "alert_latency"
PREFIX = "alat-"
WARM_PREFIX = "awarm-"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver:
    """A bare asyncio HTTP server: notes when each request's headers arrived and which managers the
    webhook body names, and answers 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, float] = {}
        """manager id -> perf_counter at the first request that named it firing."""
        self.requests = 0
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, managers: set[str], within: float) -> bool:
        """Wait until every one of these managers was named firing; False after ``within`` s."""
        deadline = time.monotonic() + within
        while not managers <= self.arrivals.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.arrived.clear()  # no await since the check: no arrival can slip in between
            try:
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.perf_counter()
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                self.requests += 1
                for alert in orjson.loads(body).get("firing", ()):
                    manager = alert["labels"].get("manager", "")
                    self.arrivals.setdefault(manager, arrived)
                self.arrived.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def config_file(path: Path, receiver: Receiver) -> Path:
    config = {
        "receivers": [{"name": "hook", "type": "webhook", "url": receiver.url, "secret": "bench"}],
        "route": {
            "receiver": "hook",
            "group_by": ["alertname", "scope"],
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "off",
        },
        "rules": [
            {
                "id": "first-call",
                "name": "FirstCall",
                "kpi": "calls",
                "scope": {"kind": "manager"},
                "period": "day",
                "condition": {"op": ">", "threshold": "0"},
                "for": "0s",
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def call_event(manager: str) -> tuple[bytes, bytes]:
    value = {
        "event_id": f"{manager}-{uuid.uuid4().hex[:8]}",
        "type": "call",
        "occurred_at": datetime.now(UTC).isoformat(),
        "manager_id": manager,
        "duration_s": 30,
    }
    return manager.encode(), orjson.dumps(value)


async def commit_times(redis: Redis, keys: RedisKeys, count: int) -> array[float]:
    """Wall time (s) of the stream worker's commit of each crossing's day bucket (Redis change feed)."""
    committed = array("d", [math.nan]) * count
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.changes)  # type: ignore[assignment]
    for _id, fields in entries:
        entry = orjson.loads(fields[b"data"])
        for bucket in entry.get("buckets", ()):
            scope = bucket.get("scope", "")
            if bucket.get("g") == "day" and scope.startswith("m:" + PREFIX):
                index = int(scope[2 + len(PREFIX) :])
                if index < count and math.isnan(committed[index]):
                    committed[index] = entry["committed_ms"] / 1000
    return committed


async def evaluation_times(redis: Redis, names: AlertNames, count: int) -> array[float]:
    """Wall time (s) of the alerts worker's evaluation that fired each crossing (its history entry)."""
    fired = array("d", [math.nan]) * count
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(names.history)  # type: ignore[assignment]
    for _id, fields in entries:
        entry = orjson.loads(fields[b"data"])
        manager = entry.get("labels", {}).get("manager", "") if entry.get("kind") == "state" else ""
        if manager.startswith(PREFIX) and entry.get("to") == "firing":
            index = int(manager[len(PREFIX) :])
            if index < count:
                fired[index] = datetime.fromisoformat(entry["at"]).timestamp()
    return fired


def quantiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50_ms": _ms(percentile(ordered, 0.5)),
        "p99_ms": _ms(percentile(ordered, 0.99)),
        "max_ms": _ms(ordered[-1] if ordered else None),
        "n": len(ordered),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def measure(servers: BenchServers, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    tag = run_id
    settings: Settings = servers.fresh(
        "alerts",
        kafka={
            "events_topic": f"bench.alerts.{tag}",
            "dlq_topic": f"bench.alerts.dlq.{tag}",
            "updates_topic": f"bench.alerts.updates.{tag}",
            "quotas_topic": f"bench.alerts.quotas.{tag}",
            "partitions": args.partitions,
        },
        alerts={
            "outbox_topic": f"bench.alerts.outbox.{tag}",
            "config_topic": f"bench.alerts.config.{tag}",
            "consumer_group": f"bench-alerts-{tag}",
            "metrics_port": 0,
            "evaluation_interval_s": args.evaluation_interval,
        },
    )
    await kafka.ensure_product_topics(settings)
    receiver = Receiver()
    await receiver.start()
    logs = servers.logs
    config = config_file(logs / "alerts.yaml", receiver)
    worker_args = ["--loglevel", "info", "--web-port", str(free_port())]
    worker = ChildProcess("worker", "streams.worker", worker_args, settings, logs / "worker.log").start()
    alerts = ChildProcess(
        "alerts", "alerts.worker", ["--config", str(config), "--loglevel", "info"], settings, logs / "alerts.log"
    ).start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0, acks=1)
    redis = Redis.from_url(settings.redis.url)
    figures: dict[str, Any] = {"crossings": args.crossings, "why_not": []}
    try:
        await producer.start()
        # Warm up: crossings until one comes back quickly, so start-up is left out.
        began = time.monotonic()
        for index in range(1000):
            manager = f"{WARM_PREFIX}{index:04d}"
            sent = time.perf_counter()
            key, value = call_event(manager)
            await producer.send_and_wait(settings.kafka.events_topic, value, key=key)
            if not await receiver.wait_for({manager}, args.warm_timeout - (time.monotonic() - began)):
                raise RuntimeError(f"no alert came back within {args.warm_timeout} s; see {logs}")
            if receiver.arrivals[manager] - sent < 0.5 and index >= 3:
                break
        say(f"pipeline warm after {time.monotonic() - began:.1f} s; {args.crossings} crossings at {args.rate:g}/s")

        cpu = CpuWindow(
            {
                "worker": worker.pid,
                "alerts": alerts.pid,
                "bench": os.getpid(),
                "redis": servers.redis_pid(),
                "kafka": servers.kafka_pid(),
            }
        )
        cpu.begin()
        load_before = os.getloadavg()
        sent_at = array("d", [math.nan]) * args.crossings
        wall_offset = time.time() - time.perf_counter()
        pending = []
        start = time.perf_counter() + 0.05
        for index in range(args.crossings):
            delay = start + index / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = call_event(f"{PREFIX}{index:06d}")
            sent_at[index] = time.perf_counter()
            pending.append(await producer.send(settings.kafka.events_topic, value, key=key))
        await asyncio.gather(*pending)
        wanted = {f"{PREFIX}{index:06d}" for index in range(args.crossings)}
        await receiver.wait_for(wanted, args.drain)
        figures["cpu_s"] = cpu.end()
        figures["load_average"] = {"before": load_before, "after": os.getloadavg()}
        missing = len(wanted - receiver.arrivals.keys())
        if missing:
            figures["why_not"].append(f"{missing} of {args.crossings} crossings never reached the receiver")

        committed = await commit_times(redis, RedisKeys.from_settings(settings), args.crossings)
        evaluated = await evaluation_times(redis, AlertNames.from_settings(settings), args.crossings)
        to_http, to_commit, commit_to_eval, eval_to_http = [], [], [], []
        for index in range(args.crossings):
            produced = sent_at[index] + wall_offset
            arrival = receiver.arrivals.get(f"{PREFIX}{index:06d}")
            if arrival is not None:
                to_http.append(arrival + wall_offset - produced)
            if not math.isnan(committed[index]):
                to_commit.append(committed[index] - produced)
                if not math.isnan(evaluated[index]):
                    commit_to_eval.append(evaluated[index] - committed[index])
            if not math.isnan(evaluated[index]) and arrival is not None:
                eval_to_http.append(arrival + wall_offset - evaluated[index])
        figures["event_to_http"] = quantiles(to_http)
        figures["event_to_commit"] = quantiles(to_commit)
        figures["commit_to_evaluation"] = quantiles(commit_to_eval)
        figures["evaluation_to_http"] = quantiles(eval_to_http)
        figures["requests"] = receiver.requests
        return figures
    finally:
        await producer.stop()
        alerts.stop()
        worker.stop()
        await receiver.stop()
        keys = [key async for key in redis.scan_iter(match=f"{settings.redis.key_prefix}:*")]
        if keys and servers.external["redis"]:
            await redis.delete(*keys)
        await redis.aclose()


async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
    code_at_start = source_digest()
    with bench_servers(run_id) as servers:
        figures = await measure(servers, args, run_id)
    code_seen = {"start": code_at_start, "end": source_digest()}
    if code_seen["start"] != code_seen["end"]:
        say("WARNING: the code under test changed during the run; the figures may mix two versions")
    alert, commit = figures["event_to_http"], figures["event_to_commit"]
    ratios = {"p50": ratio(alert["p50_ms"], commit["p50_ms"]), "p99": ratio(alert["p99_ms"], commit["p99_ms"])}
    record = {
        "run_id": run_id,
        "parameters": {
            "crossings": args.crossings,
            "rate": args.rate,
            "partitions": args.partitions,
            "evaluation_interval_s": args.evaluation_interval,
            "for_s": 0,
            "group_wait_s": 0,
            "worker_batch_size": servers.settings.worker.batch_size,
            "worker_batch_within_s": servers.settings.worker.batch_within_s,
            "external_servers": servers.external,
        },
        "figures": figures,
        "ratios_alert_over_commit": ratios,
        "source_digest": code_seen,
        "logs": str(servers.logs),
    }
    path = append_result(NAME, record)
    print_summary(figures, ratios, path)
    return 0 if not figures["why_not"] else 1


def print_summary(figures: dict[str, Any], ratios: dict[str, float | None], path: Path) -> None:
    def line(label: str, q: dict[str, Any]) -> str:
        return (
            f"  {label:<36} p50 {fmt(q['p50_ms'], ',.1f'):>8} ms   p99 {fmt(q['p99_ms'], ',.1f'):>8} ms   "
            f"max {fmt(q['max_ms'], ',.1f'):>8} ms   (n={q['n']})"
        )

    load = figures["load_average"]
    print(f"alert latency, {figures['crossings']} crossings, for = 0, group_wait = 0")
    print(line("event -> receiver HTTP request", figures["event_to_http"]))
    print(line("baseline: event -> KPI state commit", figures["event_to_commit"]))
    print(line("  split: commit -> alert evaluation", figures["commit_to_evaluation"]))
    print(line("  split: evaluation -> HTTP request", figures["evaluation_to_http"]))
    print(f"  ratio alert / commit: p50 {fmt(ratios['p50'], '.2f')}x, p99 {fmt(ratios['p99'], '.2f')}x")
    print(f"  cpu s: {figures['cpu_s']}")
    print(f"  load average before {load['before']}, after {load['after']}")
    if figures["why_not"]:
        print("  PROBLEMS: " + "; ".join(figures["why_not"]))
    print(f"  result appended to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.alert_latency",
        description="Latency from producing a threshold-crossing event to the receiver's HTTP request "
        "(for = 0, group_wait = 0), with the event-to-state-commit time of the same events as baseline.",
    )
    parser.add_argument("--crossings", type=int, default=300, help="threshold crossings measured (default 300)")
    parser.add_argument("--rate", type=float, default=5.0, help="crossings per second (default 5)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the topics (default 1)")
    parser.add_argument(
        "--evaluation-interval", type=float, default=1.0, help="alerts worker tick, s (default 1, as deployed)"
    )
    parser.add_argument("--warm-timeout", type=float, default=120.0, help="s to wait for the first alert")
    parser.add_argument("--drain", type=float, default=60.0, help="s to wait for the last alerts after sending")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
