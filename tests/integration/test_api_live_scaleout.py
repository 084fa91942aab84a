"""Scale-out: several API processes (real Kafka, Redis and stream worker) each read the change feed
themselves, and their clients all get the same changes. Two processes on two ports, and two
uvicorn workers sharing one port (``crm-pulse api --workers 2``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services import kafka
from services.settings import Settings
from tests.integration.api_harness import free_port, wait_until
from tests.integration.worker_process import running_worker, stop_process

pytestmark = pytest.mark.integration

EVENTS = 5
CLIENTS_PER_PORT = 4


@contextmanager
def api_process(settings: Settings, port: int, log_path: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``crm-pulse api --port P [EXTRA]`` as a child process, stopped by its PID."""
    env = {**os.environ, **settings.to_environment(), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "api", "--port", str(port), "--log-level", "warning", *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop_process(process)


async def healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def read_all(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] != "ping":
                into.append(message)


def everyone_counted(received: list[list[dict[str, Any]]], calls: int) -> bool:
    return all(company_calls(messages) == calls for messages in received)


def company_calls(messages: list[dict[str, Any]]) -> int:
    calls = [m["kpis"]["calls"] for m in messages if m["type"] == "change" and (m["scope"], m["g"]) == ("c", "day")]
    return calls[-1] if calls else 0


async def test_clients_of_every_api_process_get_the_same_changes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(api={"auth": "off", "ws_heartbeat_s": 60})
    await kafka.ensure_topics(settings, [settings.kafka.events_topic, settings.kafka.dlq_topic], 2)
    ports = {"first": free_port(), "second": free_port(), "shared": free_port()}
    with (
        running_worker(settings, tmp_path / "worker.log"),
        api_process(settings, ports["first"], tmp_path / "api-first.log"),
        api_process(settings, ports["second"], tmp_path / "api-second.log"),
        api_process(settings, ports["shared"], tmp_path / "api-shared.log", "--workers", "2") as shared,
    ):
        for name, port in ports.items():
            await wait_until(partial(healthy, port), within=60, what=f"the API ({name}) on port {port}")
        await wait_until(
            lambda: len(_children(shared.pid)) >= 2, within=30, what="two uvicorn worker processes on one port"
        )
        clients: list[tuple[str, ClientConnection]] = []
        received: list[list[dict[str, Any]]] = []
        readers: list[asyncio.Task[None]] = []
        producer = kafka.producer(settings)
        await producer.start()
        try:
            for name, port in ports.items():
                for _ in range(CLIENTS_PER_PORT if name != "shared" else 2 * CLIENTS_PER_PORT):
                    ws = await connect(f"ws://127.0.0.1:{port}/ws")
                    await ws.send(json.dumps({"type": "subscribe", "scopes": ["c", "t:team-01"]}))
                    clients.append((name, ws))
                    received.append([])
                    readers.append(asyncio.create_task(read_all(ws, received[-1])))
            await wait_until(
                lambda: all(m and m[0]["type"] == "snapshot" for m in received), within=30, what="every snapshot"
            )
            # One event at a time, each seen everywhere before the next: no process coalesces two of them,
            # so every client must get exactly the same messages.
            for n in range(1, EVENTS + 1):
                event: dict[str, Any] = {
                    "event_id": f"scale-{n}",
                    "type": "call",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "manager_id": f"mgr-{n % 2}",
                    "team_id": "team-01",
                    "duration_s": 60,
                }
                await producer.send_and_wait(
                    settings.kafka.events_topic, orjson.dumps(event), key=f"mgr-{n % 2}".encode()
                )
                await wait_until(
                    partial(everyone_counted, received, n),
                    within=60,
                    what=f"event {n} at every client",
                )
        finally:
            await producer.stop()
            for task in readers:
                task.cancel()
            for _, ws in clients:
                await ws.close()

    changes = [[_comparable(m) for m in messages[1:]] for messages in received]
    assert all(messages[0]["type"] == "snapshot" for messages in received)
    assert changes[0], "no change reached the first client"
    scopes = {(m[2], m[3]) for m in changes[0]}
    assert {("c", "day"), ("c", "month"), ("t:team-01", "day"), ("t:team-01", "month")} <= scopes
    for (name, _), theirs in zip(clients, changes, strict=True):
        assert theirs == changes[0], f"a client of the {name} API got other changes"


def _comparable(message: dict[str, Any]) -> tuple[Any, ...]:
    return (
        message["type"],
        message.get("seq"),
        message.get("scope"),
        message.get("g"),
        message.get("b"),
        json.dumps(message.get("kpis", message.get("pipeline")), sort_keys=True),
    )


def _children(pid: int) -> list[int]:
    """The worker processes uvicorn spawned (Linux /proc; not multiprocessing's resource tracker)."""
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    workers = []
    for child in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return workers
