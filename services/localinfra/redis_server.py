"""A local Redis (Debian's redis-server) with an append-only file, on the loopback interface."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from services.localinfra import layout
from services.localinfra.errors import PortInUseError, ServerStartError
from services.localinfra.processes import (
    PidFile,
    is_alive,
    log_size,
    log_tail,
    port_open,
    require_tool,
    spawn_detached,
    terminate,
    wait_until,
)
from services.settings import Settings

HOST = "127.0.0.1"
_INSTALL_HINT = "run scripts/setup (it runs: apt-get update && apt-get install -y redis-server)"


def ping(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Whether a Redis server on ``host:port`` answers PING with PONG (not while still loading its data)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(frozen=True)
class RedisServer:
    """The local Redis: data, log and pid file under ``home``."""

    home: Path
    port: int
    start_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisServer:
        return cls(
            home=layout.redis_home(settings),
            port=settings.local.redis_port,
            start_timeout_s=settings.local.start_timeout_s,
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "redis.log"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.home / "redis.pid")

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def command(self, executable: str) -> list[str]:
        return [
            executable,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.home),
            "--daemonize",
            "no",
            "--logfile",
            "",  # stdout, which goes to redis.log
            # Durable enough for a development box: the AOF is fsynced every second, no RDB snapshots.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]

    # -- lifecycle --

    def pid(self) -> int | None:
        """PID of our running server, if any (redis rewrites its command line to "redis-server HOST:PORT")."""
        return self.pid_file.live_pid("redis", str(self.port))

    def answers(self) -> bool:
        return ping(HOST, self.port)

    def start(self) -> tuple[int, bool]:
        """Start the server unless ours is already running; (PID, whether this call started it)."""
        pid = self.pid()
        if pid is not None:
            if not wait_until(self.answers, timeout=self.start_timeout_s, interval=0.1):
                raise ServerStartError(
                    f"our Redis (pid {pid}) runs but does not answer PING on {self.address}; stop it with "
                    f"'crm-pulse infra down'. Log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            return pid, False
        if port_open(HOST, self.port):
            raise PortInUseError(
                f"{self.address} is taken by a process that is not our Redis (no live pid in {self.pid_file.path}); "
                "stop it, or choose another port with CRM_PULSE_LOCAL__REDIS_PORT"
            )
        executable = require_tool("redis-server", _INSTALL_HINT)
        self.home.mkdir(parents=True, exist_ok=True)
        log_start = log_size(self.log_file)
        pid = spawn_detached(self.command(executable), log_path=self.log_file, cwd=self.home)
        self.pid_file.write(pid)
        deadline = time.monotonic() + self.start_timeout_s
        while not self.answers():
            if not is_alive(pid) or time.monotonic() >= deadline:
                terminate(pid, timeout=5.0)
                self.pid_file.remove()
                raise ServerStartError(
                    f"Redis did not answer PING on {self.address} within {self.start_timeout_s:.0f} s or exited. "
                    f"Log tail ({self.log_file}):\n" + log_tail(self.log_file, since=log_start)
                )
            time.sleep(0.05)
        return pid, True

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop our server if it runs (SIGTERM: redis fsyncs its AOF and exits); the PID it had."""
        pid = self.pid()
        if pid is not None:
            terminate(pid, timeout=timeout)
        self.pid_file.remove()
        return pid
