"""Kafka, Redis and PostgreSQL together: start what the environment does not already provide, stop what we started."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import redis

from services.localinfra.errors import LocalInfraError, ServerNotReachableError
from services.localinfra.kafka_broker import KafkaBroker
from services.localinfra.postgres_server import PostgresServer
from services.localinfra.postgres_server import answers as postgres_answers
from services.localinfra.processes import port_open, wait_until
from services.localinfra.redis_server import RedisServer
from services.settings import ENV_PREFIX, Settings, externally_provided

ServerName = Literal["kafka", "redis", "postgres"]
SERVERS: tuple[ServerName, ...] = ("kafka", "redis", "postgres")
# Redis is ready in milliseconds, PostgreSQL in one or two seconds, Kafka in several.
_START_ORDER: tuple[ServerName, ...] = ("redis", "postgres", "kafka")
_STOP_ORDER: tuple[ServerName, ...] = ("kafka", "postgres", "redis")
_EXTERNAL_TIMEOUT_S = 10.0
_VARIABLES: dict[str, tuple[str, str]] = {
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA__BOOTSTRAP_SERVERS"),
    "redis": ("REDIS_URL", "REDIS__URL"),
    "postgres": ("DATABASE_URL", "DATABASE__URL"),
}
"""The short and the prefixed (less ``CRM_PULSE_``) variable that names each server."""

External = Mapping[str, bool]
"""Which servers (``kafka``, ``redis``, ``postgres``) are provided from outside, as ``externally_provided()``
answers; a name left out counts as not provided."""

Echo = Callable[[str], None]
"""Where ``up`` and ``down`` report what they do, one line at a time (``print`` in the CLI)."""


def _quiet(message: str) -> None:
    """Report nothing."""


@dataclass(frozen=True)
class ServerStatus:
    """What ``infra status`` says about one server."""

    name: ServerName
    address: str
    running: bool
    external: bool
    pid: int | None = None
    home: Path | None = None
    note: str = ""

    def describe(self) -> str:
        state = "up" if self.running else "down"
        where = "external" if self.external else f"pid {self.pid}" if self.pid else "local"
        extra = f"  {self.note}" if self.note else ""
        return f"{self.name:<8} {state:<5} {self.address:<28} {where}{extra}"


def client_settings(settings: Settings, *, external: External | None = None) -> Settings:
    """The settings the components use: pointed at the local servers unless the environment names others."""
    external = _external(external)
    kafka: dict[str, object] = {}
    redis_section: dict[str, object] = {}
    database: dict[str, object] = {}
    if not external["kafka"]:
        kafka["bootstrap_servers"] = KafkaBroker.from_settings(settings).bootstrap_servers
    if not external["redis"]:
        redis_section["url"] = RedisServer.from_settings(settings).url(_redis_db(settings.redis.url))
    if not external["postgres"]:
        database["url"] = PostgresServer.from_settings(settings).url
    if not kafka and not redis_section and not database:
        return settings
    return settings.with_overrides(kafka=kafka, redis=redis_section, database=database)


def client_environment(settings: Settings, *, external: External | None = None) -> dict[str, str]:
    """Environment variables that point a child process at the servers of ``client_settings``."""
    clients = client_settings(settings, external=external)
    return {
        f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS": clients.kafka.bootstrap_servers,
        f"{ENV_PREFIX}REDIS__URL": clients.redis.url,
        f"{ENV_PREFIX}DATABASE__URL": clients.database.url,
    }


def up(settings: Settings, *, echo: Echo = _quiet, external: External | None = None) -> list[ServerName]:
    """Make Kafka, Redis and PostgreSQL available; the names of the servers this call started (to stop them later).

    Servers the environment points at are only checked; ours already running are reused. If one
    fails to start, the ones this call started are stopped again. ``external`` overrides which
    servers count as provided from outside (default: ``externally_provided()``, from the environment).
    """
    external = _external(external)
    started: list[ServerName] = []
    try:
        for name in _START_ORDER:
            if external[name]:
                _check_external(name, settings)
                echo(f"{name}: using {_external_address(name, settings)} from the environment")
                continue
            began = time.monotonic()
            server = _local(name, settings)
            pid, fresh = server.start()
            if fresh:
                started.append(name)
                echo(f"{name}: started pid {pid} in {time.monotonic() - began:.1f} s ({server.home})")
            else:
                echo(f"{name}: already running, pid {pid} ({server.home})")
    except LocalInfraError:
        down(settings, only=started, echo=echo, external=external)
        raise
    return started


def down(
    settings: Settings,
    *,
    only: Collection[ServerName] | None = None,
    echo: Echo = _quiet,
    external: External | None = None,
) -> list[ServerName]:
    """Stop our local servers (those in ``only``, if given) by PID; the names of those that were running."""
    external = _external(external)
    stopped: list[ServerName] = []
    for name in _STOP_ORDER:
        if external[name] or (only is not None and name not in only):
            continue
        pid = _local(name, settings).stop()
        if pid is not None:
            stopped.append(name)
            echo(f"{name}: stopped pid {pid}")
    return stopped


def status(settings: Settings, *, external: External | None = None) -> list[ServerStatus]:
    """Whether each server answers: ours by pid file and port, external ones by connecting."""
    external = _external(external)
    statuses: list[ServerStatus] = []
    for name in SERVERS:
        if external[name]:
            address = _external_address(name, settings)
            statuses.append(ServerStatus(name, address, _reachable(name, settings), external=True))
            continue
        server = _local(name, settings)
        pid = server.pid()
        running = pid is not None and server.answers()
        note = "" if pid is None or running else "process alive but not answering"
        statuses.append(
            ServerStatus(name, _local_address(name, settings), running, False, pid=pid, home=server.home, note=note)
        )
    return statuses


def _external(external: External | None) -> External:
    given = externally_provided() if external is None else external
    return {name: bool(given.get(name, False)) for name in SERVERS}


def _local(name: ServerName, settings: Settings) -> KafkaBroker | RedisServer | PostgresServer:
    if name == "kafka":
        return KafkaBroker.from_settings(settings)
    if name == "postgres":
        return PostgresServer.from_settings(settings)
    return RedisServer.from_settings(settings)


def _local_address(name: ServerName, settings: Settings) -> str:
    if name == "kafka":
        return KafkaBroker.from_settings(settings).bootstrap_servers
    if name == "postgres":
        return PostgresServer.from_settings(settings).address
    return RedisServer.from_settings(settings).address


def _external_address(name: ServerName, settings: Settings) -> str:
    if name == "kafka":
        return settings.kafka.bootstrap_servers
    if name == "postgres":
        parts = urlsplit(settings.database.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 5432}{parts.path}"  # never the password
    parts = urlsplit(settings.redis.url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password


def _reachable(name: ServerName, settings: Settings) -> bool:
    if name == "kafka":
        return any(port_open(host, port, timeout=2.0) for host, port in _bootstrap_addresses(settings))
    if name == "postgres":
        parts = urlsplit(settings.database.url)
        return postgres_answers(parts.hostname or "127.0.0.1", parts.port or 5432, timeout=2.0)
    try:
        with redis.Redis.from_url(settings.redis.url, socket_timeout=2.0, socket_connect_timeout=2.0) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _check_external(name: ServerName, settings: Settings) -> None:
    if not wait_until(lambda: _reachable(name, settings), timeout=_EXTERNAL_TIMEOUT_S, interval=0.5):
        alias, field = _VARIABLES[name]
        raise ServerNotReachableError(
            f"{name} at {_external_address(name, settings)} (from {alias} or {ENV_PREFIX}{field}) did not answer "
            f"within {_EXTERNAL_TIMEOUT_S:.0f} s; start it, or unset the variable to use a local one"
        )


def _bootstrap_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for server in settings.kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses


def _redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0
