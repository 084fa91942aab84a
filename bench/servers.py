"""Kafka and Redis for a benchmark run: the bench's own fresh servers, or those the environment names.

The bench servers live in ``.local/bench`` on ports of their own (Kafka 22092/22093, Redis
22379), apart from the demo's and the tests', so a bench never touches their data, and below the
kernel's ephemeral range (32768-60999), where a client connection's own port could hold a fixed
port in TIME-WAIT and make the broker's bind fail. They are
wiped and started at the beginning of a run and stopped (by PID, through
``services.localinfra``) at its end. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` (or their
``CRM_PULSE_`` names) point a run at existing servers instead; those are never stopped.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.localinfra import layout, stack
from services.localinfra.kafka_broker import KafkaBroker
from services.localinfra.redis_server import RedisServer
from services.settings import LocalInfraSettings, Settings, externally_provided, load_settings

BENCH_LOCAL = LocalInfraSettings(
    data_dir=Path(".local/bench"),
    kafka_port=22092,
    kafka_controller_port=22093,
    redis_port=22379,
    postgres_port=22432,
)


def say(message: str) -> None:
    """Progress output of the benches (stderr, so stdout keeps the summary)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchServers:
    """The servers of one bench run."""

    settings: Settings
    """Pointing at the servers, with the default topic names (use ``fresh`` for a measurement)."""
    started: tuple[str, ...]
    external: dict[str, bool]
    logs: Path
    """Where this run's child processes write their logs."""

    def fresh(self, label: str, **sections: dict[str, Any]) -> Settings:
        """Settings with a fresh consumer group and Redis key prefix (topics as given in ``sections``)."""
        unique = uuid.uuid4().hex[:6]
        fresh = self.settings.with_overrides(
            kafka={"consumer_group": f"bench-{label}-{unique}"},
            redis={"key_prefix": f"bench-{label}-{unique}"},
        )
        return fresh.with_overrides(**sections) if sections else fresh

    def redis_pid(self) -> int | None:
        return None if self.external["redis"] else RedisServer.from_settings(self.settings).pid()

    def kafka_pid(self) -> int | None:
        return None if self.external["kafka"] else KafkaBroker.from_settings(self.settings).pid()


@contextmanager
def bench_servers(run_id: str, local: LocalInfraSettings = BENCH_LOCAL) -> Iterator[BenchServers]:
    """Fresh bench servers (or the environment's) for the duration of the block; ``local`` says where
    and on which ports (a bench that must not share the others' servers passes its own)."""
    external = externally_provided()
    base = load_settings().with_overrides(local=local.model_dump())
    settings = stack.client_settings(base, external=external)
    data_dir = layout.data_dir(settings)
    logs = data_dir / "logs" / run_id
    with _exclusive(data_dir.with_name(data_dir.name + ".lock")):
        # Stop what an interrupted run may have left (our pid files only), then start clean.
        stack.down(settings, external=external)
        for name in ("kafka", "redis", "postgres"):
            if not external[name]:
                shutil.rmtree(data_dir / name, ignore_errors=True)
        began = time.monotonic()
        started = stack.up(settings, external=external, echo=say)
        say(f"servers ready in {time.monotonic() - began:.1f} s")
        logs.mkdir(parents=True, exist_ok=True)
        try:
            yield BenchServers(settings=settings, started=tuple(started), external=dict(external), logs=logs)
        finally:
            stack.down(settings, only=started, external=external, echo=say)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One bench run at a time on the bench servers (a second one waits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another bench run that holds {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
