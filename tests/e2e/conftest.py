"""Fixtures of the browser tests: the stream worker and the API as real child processes on loopback
(the API killable and restartable by its PID), API tokens, and headless Chromium driven by Playwright.

Chromium is Debian's (``scripts/setup`` installs it with apt-get); Playwright's own browser
downloads are never used. Screenshots go to ``test-artifacts/`` at 1920x1080.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from redis.asyncio import Redis

from services.auth import Role
from services.kafka import ensure_product_topics
from services.kafka import producer as kafka_producer
from services.redis import redis_client
from services.settings import Settings
from services.token_store import TokenStore
from services.topics import AuthKeys, RedisKeys, Topics
from tests.integration.api_harness import free_port, wait_until
from tests.integration.worker_process import WorkerProcess, running_worker

CHROMIUM = shutil.which("chromium")
"""Debian's chromium, as scripts/setup installs it."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORT = {"width": 1920, "height": 1080}
API_FACTORY = "dashboard_api.app:create_app"
START_DEADLINE_S = 60.0
WORKER_DEADLINE_S = 120.0
"""The faust worker needs a while to join its group the first time."""


class ApiProcess:
    """The API served by uvicorn as a child process on a fixed loopback port: killed and restarted by PID."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = WorkerProcess(
            settings,
            log_path,
            module="uvicorn",
            args=(API_FACTORY, "--factory", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
        )

    async def start(self) -> None:
        """Start it and wait until /healthz answers 200 (Redis reachable)."""
        self.process.start()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:

            async def healthy() -> bool:
                assert self.process.process is not None
                if self.process.process.poll() is not None:
                    raise AssertionError(f"the API exited; log tail:\n{self.process.log_tail()}")
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, within=START_DEADLINE_S, interval=0.1, what="the API's /healthz")

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown, connections are cut."""
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


def call(manager: str, team: str, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "call",
        "occurred_at": datetime.now(UTC).isoformat(),
        "manager_id": manager,
        "team_id": team,
        "duration_s": 60,
    }


def won_deal(manager: str, team: str, deal_id: str, amount: str) -> list[dict[str, Any]]:
    """A deal created and won at once: one more deal won and ``amount`` of revenue."""
    now = datetime.now(UTC).isoformat()
    common = {"manager_id": manager, "team_id": team, "deal_id": deal_id, "occurred_at": now}
    return [
        {**common, "event_id": f"{deal_id}-created", "type": "deal_created", "customer_id": f"cust-{deal_id}",
         "amount": amount},
        {**common, "event_id": f"{deal_id}-won", "type": "deal_won", "amount": amount},
    ]  # fmt: skip


@dataclass
class Stack:
    """A running product for one test: API process (and worker, if asked), tokens, an admin client."""

    settings: Settings
    api: ApiProcess
    http: httpx.AsyncClient
    """Talks to the API with an admin token."""
    redis: Redis
    keys: RedisKeys
    tokens: TokenStore
    produce_events: Callable[[list[dict[str, Any]]], Any]
    worker: WorkerProcess | None = None

    async def token(self, role: Role, *, team_id: str | None = None, manager_id: str | None = None) -> str:
        plaintext, _ = await self.tokens.create(
            name=f"e2e {role.value}", role=role, team_id=team_id, manager_id=manager_id, now=datetime.now(UTC)
        )
        return plaintext

    async def produce(self, *events: dict[str, Any]) -> None:
        await self.produce_events(list(events))

    async def day_measure(self, scope: str, measure: str) -> int:
        """A measure of today's bucket of a scope, as the worker committed it (0 when absent)."""
        today = datetime.now(self.settings.business.zone).date().isoformat()
        value = await self.redis.hget(self.keys.bucket(scope, "day", today), measure)
        return int(value) if value is not None else 0

    async def wait_for_measure(self, scope: str, measure: str, expected: int) -> None:
        async def reached() -> bool:
            return await self.day_measure(scope, measure) == expected

        try:
            await wait_until(reached, within=WORKER_DEADLINE_S, interval=0.1, what=f"{scope} {measure} == {expected}")
        except AssertionError:
            tail = self.worker.log_tail() if self.worker else ""
            raise AssertionError(
                f"{scope} {measure} is {await self.day_measure(scope, measure)}, not {expected}; worker log:\n{tail}"
            ) from None


async def _stack(settings: Settings, tmp_path: Path, *, with_worker: bool) -> AsyncIterator[Stack]:
    await ensure_product_topics(settings)
    topics = Topics.from_settings(settings)
    producer = kafka_producer(settings)
    await producer.start()
    redis = redis_client(settings)

    async def produce_events(events: list[dict[str, Any]]) -> None:
        for event in events:
            await producer.send_and_wait(
                topics.events, json.dumps(event).encode(), key=str(event.get("deal_id") or event["manager_id"]).encode()
            )

    api = ApiProcess(settings, tmp_path / "api.log")
    tokens = TokenStore(redis, AuthKeys.from_settings(settings))
    admin, _ = await tokens.create(name="e2e admin", role=Role.ADMIN, now=datetime.now(UTC))
    with ExitStack() as processes:
        worker = processes.enter_context(running_worker(settings, tmp_path / "worker.log")) if with_worker else None
        processes.callback(api.stop)  # first out: the API stops before the worker
        try:
            await api.start()
            async with httpx.AsyncClient(
                base_url=api.base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=10
            ) as http:
                yield Stack(
                    settings=settings,
                    api=api,
                    http=http,
                    redis=redis,
                    keys=RedisKeys.from_settings(settings),
                    tokens=tokens,
                    produce_events=produce_events,
                    worker=worker,
                )
        finally:
            await producer.stop()
            await redis.aclose()


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """Worker and API processes on fresh topics and Redis prefix, access control on."""
    async for running in _stack(settings, tmp_path, with_worker=True):
        yield running


@pytest.fixture
async def api_only(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """The API process alone (no worker): for what needs no new figures."""
    async for running in _stack(settings, tmp_path, with_worker=False):
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("chromium is not on PATH: run scripts/setup (it installs Debian's chromium with apt-get)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Screen:
    """A 1920x1080 page, the JavaScript errors it raised, and its screenshots."""

    page: Page
    errors: list[str]
    requests: list[tuple[str, str | None]]
    """(URL, Authorization header) of every request the page made to the API and /ws."""

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"e2e-{name}.png"
        await self.page.screenshot(path=str(path))
        return path

    def assert_no_script_errors(self) -> None:
        assert not self.errors, f"the page raised: {self.errors}"


@pytest.fixture
async def screen(browser: Browser) -> AsyncIterator[Screen]:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    errors: list[str] = []
    requests: list[tuple[str, str | None]] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: requests.append((request.url, request.headers.get("authorization"))))
    page.on("websocket", lambda socket: requests.append((socket.url, None)))
    try:
        yield Screen(page=page, errors=errors, requests=requests)
    finally:
        await context.close()
