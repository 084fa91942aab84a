"""Fixtures for every kind of test.

The test session is hermetic: it reads the environment once (only to learn whether
``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` or their ``CRM_PULSE_`` names point at servers to use)
and then removes every ``CRM_PULSE_*`` variable and both aliases, so ``load_settings()`` inside a
test sees only what the test sets.

Integration and e2e tests ask for ``settings`` (or ``make_settings`` for several), which needs
``infra``: a Kafka broker, a Redis and a PostgreSQL started once per session by ``services.localinfra``
in ``.local/test`` on ports of their own (Kafka 29092/29093, Redis 26379, PostgreSQL 25432), wiped first
and stopped at the end; servers named by the environment (``DATABASE_URL`` for PostgreSQL) are used
instead. Unit tests never start them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.localinfra import layout, stack
from services.settings import CONFIG_FILE_ENV, ENV_PREFIX, LocalInfraSettings, Settings, externally_provided

# Shared helpers with assertions, imported by integration and browser tests: rewrite their asserts
# whichever test module imports them first (this also avoids pytest's "already imported" warning).
pytest.register_assert_rewrite("tests.integration.api_harness", "tests.integration.pipeline_checks")

TEST_LOCAL = LocalInfraSettings(
    data_dir=Path(".local/test"),
    kafka_port=29092,
    kafka_controller_port=29093,
    redis_port=26379,
    postgres_port=25432,
)
"""Where and on which ports the test servers run: apart from the demo's, so both can run at once."""

_ALIASES = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DATABASE_URL")
_external: dict[str, bool] = {"kafka": False, "redis": False, "postgres": False}
_external_addresses: dict[str, str] = {}
_removed_env: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Note which servers the environment provides, then clear our variables for the session."""
    _external.update(externally_provided())
    if any(_external.values()):
        from services.settings import load_settings

        env_settings = load_settings()
        _external_addresses["kafka"] = env_settings.kafka.bootstrap_servers
        _external_addresses["redis"] = env_settings.redis.url
        _external_addresses["postgres"] = env_settings.database.url
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in _ALIASES or name == CONFIG_FILE_ENV:
            _removed_env[name] = os.environ.pop(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow (chaos, soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the slow suites unless --run-slow: CI stays short, nothing counts as skipped."""
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.update(_removed_env)


@dataclass(frozen=True)
class Infra:
    """The servers of the test session."""

    settings: Settings
    """Pointing at the test servers, with the default topic names (tests use ``make_settings``)."""
    started: tuple[str, ...]
    """The servers this session started."""
    external: dict[str, bool]
    """Which servers the environment provided (pass as ``external=`` to ``services.localinfra.stack``)."""

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.kafka.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return self.settings.redis.url


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Kafka and Redis for the session: fresh local ones in .local/test, or the environment's."""
    base = Settings(local=TEST_LOCAL)
    overrides: dict[str, dict[str, Any]] = {}
    if _external["kafka"]:
        overrides["kafka"] = {"bootstrap_servers": _external_addresses["kafka"]}
    if _external["redis"]:
        overrides["redis"] = {"url": _external_addresses["redis"]}
    if _external["postgres"]:
        overrides["database"] = {"url": _external_addresses["postgres"]}
    settings = stack.client_settings(base.with_overrides(**overrides), external=_external)
    data_dir = layout.data_dir(settings)
    with _exclusive(data_dir.with_name(data_dir.name + ".lock")):
        # A fresh broker every session: stop what an interrupted session may have left, then wipe.
        stack.down(settings, external=_external)
        shutil.rmtree(data_dir, ignore_errors=True)
        started = stack.up(settings, external=_external, echo=_say)
        try:
            yield Infra(settings=settings, started=tuple(started), external=dict(_external))
        finally:
            stack.down(settings, only=started, external=_external, echo=_say)


@pytest.fixture
def make_settings(infra: Infra) -> Callable[..., Settings]:
    """A factory of settings for the test servers, each call with fresh names.

    Every call gives new topics (``crm.events.<id>``, ``crm.events.dlq.<id>``, ``kpi.updates.<id>``,
    ``crm.quotas.<id>``),
    a new consumer group and a new Redis key prefix, so tests never see each other's data.
    Keyword arguments replace fields per section: ``make_settings(kafka={"partitions": 2})``.
    """

    def make(**sections: dict[str, Any]) -> Settings:
        unique = uuid.uuid4().hex[:8]
        fresh = infra.settings.with_overrides(
            kafka={
                "events_topic": f"crm.events.{unique}",
                "dlq_topic": f"crm.events.dlq.{unique}",
                "updates_topic": f"kpi.updates.{unique}",
                "quotas_topic": f"crm.quotas.{unique}",
                "reports_topic": f"crm.reports.{unique}",
                "consumer_group": f"crm-pulse-test-{unique}",
            },
            redis={"key_prefix": f"test-{unique}"},
        )
        return fresh.with_overrides(**sections) if sections else fresh

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings for this test: the test servers, fresh topics, consumer group and Redis prefix."""
    return make_settings()


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, so two test sessions never share (and wipe) the same servers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another test session that holds {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _say(message: str) -> None:
    print(f"[infra] {message}", file=sys.stderr, flush=True)
