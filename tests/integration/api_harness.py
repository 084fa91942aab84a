"""Fixtures for the API integration tests: a real redis-server of their own and the API served
by uvicorn on a loopback port, plus helpers that write the stream worker's Redis state.

Used by tests/integration/test_api_*.py through ``pytest_plugins = ["tests.integration.api_harness"]``.
These tests start their own redis-server (not the session's ``infra``) so they run without Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import RedisError

from dashboard_api.app import create_app
from services.auth import Role, generate_token
from services.settings import Settings
from services.token_store import TokenStore
from services.topics import AuthKeys, Granularity, RedisKeys

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_DEADLINE_S = 15.0
FIXED_NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
"""The API's clock in these tests: a Friday in ISO week 2026-W48."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(
    condition: Callable[[], Any], *, within: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll a (sync or async) condition until it is truthy, or fail after the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or condition}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of the test session's own, on a free loopback port, without persistence."""
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.fail(f"redis-server exited with {process.returncode}: {output[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {port} did not answer PING within {START_DEADLINE_S} s")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def closed_kafka_address() -> str:
    """A loopback address where nothing listens (Kafka unreachable)."""
    return f"127.0.0.1:{free_port()}"


def isolated_settings(redis_url: str, **sections: dict[str, Any]) -> Settings:
    """Settings for one test: its own Redis key prefix, Kafka unreachable unless overridden."""
    base: dict[str, dict[str, Any]] = {
        "redis": {"url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:12]}"},
        "kafka": {"bootstrap_servers": closed_kafka_address()},
        "api": {"kafka_timeout_s": 5.0},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return Settings(**base)


@dataclass
class RunningApi:
    """The API under test, with clients of it and helpers that play the stream worker's part."""

    app: FastAPI
    settings: Settings
    keys: RedisKeys
    base_url: str
    ws_url: str
    port: int
    http: httpx.AsyncClient
    """Authenticated as an admin (``admin_token``); tests of access control make other tokens with ``token``."""
    redis: Redis
    """The test's own client of the same Redis, for writing the worker's state."""
    admin_token: str

    async def token(
        self, role: Role | str, *, team_id: str | None = None, manager_id: str | None = None, name: str = ""
    ) -> str:
        """A new API token of this role (bound to a team or manager where the role needs one)."""
        role = Role(role)
        token, _ = await TokenStore(self.redis, AuthKeys.from_settings(self.settings)).create(
            name=name or f"test {role.value}", role=role, team_id=team_id, manager_id=manager_id, now=FIXED_NOW
        )
        return token

    def ws_url_for(self, token: str | None) -> str:
        """The WebSocket URL with this token in the query (None: without one)."""
        base = self.ws_url.split("?", 1)[0]
        return base if token is None else f"{base}?token={token}"

    eventually = staticmethod(wait_until)

    async def write_bucket(
        self, scope: str, granularity: Granularity, bucket: str, measures: Mapping[str, int]
    ) -> None:
        key = self.keys.bucket(scope, granularity, bucket)
        await self.redis.delete(key)
        if measures:
            await self.redis.hset(key, mapping={field: str(value) for field, value in measures.items()})

    async def write_current(self, scope: str, measures: Mapping[str, int]) -> None:
        await self.redis.hset(self.keys.current(scope), mapping={f: str(v) for f, v in measures.items()})

    async def add_managers(self, teams: Mapping[str, str | None]) -> None:
        """Record managers (and their team, if any) in the directory sets."""
        for manager, team in teams.items():
            await self.redis.sadd(self.keys.managers, manager)
            if team is not None:
                await self.redis.sadd(self.keys.teams, team)
                await self.redis.sadd(self.keys.team_managers(team), manager)

    async def add_change(
        self,
        buckets: Sequence[tuple[str, Granularity, str, Mapping[str, int]]] = (),
        current: Sequence[tuple[str, Mapping[str, int]]] = (),
        *,
        produced_ms: int | None = None,
    ) -> str:
        """Append a change-feed entry as the worker does (full new values of each touched hash)."""
        now_ms = int(time.time() * 1000)
        entry: dict[str, Any] = {
            "produced_ms": produced_ms if produced_ms is not None else now_ms,
            "committed_ms": now_ms,
        }
        if buckets:
            entry["buckets"] = [
                {"scope": scope, "g": g, "b": b, "m": {field: str(value) for field, value in m.items()}}
                for scope, g, b, m in buckets
            ]
        if current:
            entry["current"] = [{"scope": scope, "m": {f: str(v) for f, v in m.items()}} for scope, m in current]
        entry_id: str = await self.redis.xadd(self.keys.changes, {"data": json.dumps(entry)})
        return entry_id

    async def metric_samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The /metrics scrape as {(sample name, sorted labels): value}."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200, response.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


@asynccontextmanager
async def running_api(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> AsyncIterator[RunningApi]:
    """The API served by uvicorn on a free loopback port, for the duration of the block."""
    app = create_app(settings, clock=clock or (lambda: FIXED_NOW))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + START_DEADLINE_S
    while not server.started:
        if serving.done():
            serving.result()
            raise AssertionError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            raise AssertionError(f"the API did not start within {START_DEADLINE_S} s")
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    test_redis = Redis.from_url(settings.redis.url, decode_responses=True)
    auth_keys = AuthKeys.from_settings(settings)
    try:
        try:
            admin_token, _ = await TokenStore(test_redis, auth_keys).create(
                name="test harness", role=Role.ADMIN, now=FIXED_NOW
            )
        except RedisError:  # tests of an unreachable Redis: no token can be stored (nor checked)
            admin_token = generate_token()
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http:
            yield RunningApi(
                app=app,
                settings=settings,
                keys=RedisKeys.from_settings(settings),
                base_url=base_url,
                ws_url=f"ws://127.0.0.1:{port}/ws?token={admin_token}",
                port=port,
                http=http,
                redis=test_redis,
                admin_token=admin_token,
            )
    finally:
        with contextlib.suppress(RedisError):
            await test_redis.delete(auth_keys.tokens, auth_keys.last_used)
        await test_redis.aclose()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


@pytest.fixture
def api_settings(redis_url: str) -> Settings:
    return isolated_settings(redis_url)


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings) as running:
        yield running


ApiFactory = Callable[..., AbstractAsyncContextManager[RunningApi]]


@pytest.fixture
def api_factory(redis_url: str) -> ApiFactory:
    """Start an API with some settings changed: ``async with api_factory(api={...}, clock=...) as api:``."""

    def start(
        *, clock: Callable[[], datetime] | None = None, **sections: dict[str, Any]
    ) -> AbstractAsyncContextManager[RunningApi]:
        return running_api(isolated_settings(redis_url, **sections), clock=clock)

    return start
