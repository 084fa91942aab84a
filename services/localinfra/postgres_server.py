"""A local PostgreSQL (Debian's postgresql-15) for the event and deal archive, on the loopback interface.

PostgreSQL refuses to run as root. Run by root (CI, a container), the cluster belongs to the
``postgres`` OS user that Debian's package creates: ``initdb`` and ``postgres`` run as that user
through ``setpriv`` (which execs, so the pid file holds the server's own PID), and the cluster's
folder is made theirs. When the project folder is not reachable by that user (a clone under
``/root``), the cluster lives in ``/var/tmp/crm-pulse-postgres/<hash of the home>`` instead, and
``home/cluster`` says where.

The cluster trusts connections from 127.0.0.1 only (a development server) and has no Unix socket;
its superuser and database are both ``crm_pulse``.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.localinfra import layout
from services.localinfra.errors import MissingToolError, PortInUseError, ServerStartError
from services.localinfra.processes import (
    PidFile,
    is_alive,
    log_size,
    log_tail,
    port_open,
    spawn_detached,
    wait_until,
)
from services.settings import Settings

HOST = "127.0.0.1"
USER = "crm_pulse"
DATABASE = "crm_pulse"
OS_USER = "postgres"
"""The OS user the server runs as when we are root (Debian's postgresql package creates it)."""
_INSTALL_HINT = "run scripts/setup (it runs: apt-get install -y postgresql)"
_SHARED_ROOT = Path("/var/tmp/crm-pulse-postgres")


def answers(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Whether a PostgreSQL server on ``host:port`` accepts a startup (an SSLRequest gets its one-byte answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return connection.recv(1) in (b"S", b"N")
    except OSError:
        return False


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can traverse every folder above ``path`` (by the permission bits)."""
    for folder in [*reversed(path.parents)]:
        try:
            mode = folder.stat()
        except OSError:
            return False
        if mode.st_uid == user.pw_uid:
            if not mode.st_mode & stat.S_IXUSR:
                return False
        elif mode.st_gid == user.pw_gid:
            if not mode.st_mode & stat.S_IXGRP:
                return False
        elif not mode.st_mode & stat.S_IXOTH:
            return False
    return True


@dataclass(frozen=True)
class PostgresServer:
    """Our PostgreSQL: its files under ``home`` (the cluster in ``cluster``), listening on ``HOST:port``."""

    home: Path
    port: int
    bin_dir: Path
    start_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresServer:
        return cls(
            home=layout.data_dir(settings) / "postgres",
            port=settings.local.postgres_port,
            bin_dir=settings.local.postgres_bin,
            start_timeout_s=settings.local.start_timeout_s,
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.home / "postgres.pid")

    @property
    def cluster(self) -> Path:
        """The cluster's data folder: in ``home``, unless the server's OS user cannot reach it."""
        as_user = self._os_user()
        if as_user is None or _reachable_by(self.home, as_user):
            return self.home / "data"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return _SHARED_ROOT / digest / "data"

    def _os_user(self) -> pwd.struct_passwd | None:
        """The user to run as (we are root), or None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise MissingToolError(
                f"PostgreSQL cannot run as root and there is no {OS_USER!r} user to run it as: {_INSTALL_HINT}"
            ) from None

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            # Another Debian release packages another major version: take the newest installed.
            installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
            path = installed[-1] if installed else path
        if not os.access(path, os.X_OK):
            raise MissingToolError(
                f"{path} is not installed: {_INSTALL_HINT}, or set CRM_PULSE_LOCAL__POSTGRES_BIN to the folder "
                "holding initdb and postgres"
            )
        return str(path)

    def _as_user(self, argv: list[str]) -> list[str]:
        user = self._os_user()
        if user is None:
            return argv
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise MissingToolError("setpriv (util-linux) is needed to run PostgreSQL as the postgres user when root")
        return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]

    def command(self) -> list[str]:
        return self._as_user(
            [
                self._tool("postgres"),
                "-D",
                str(self.cluster),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"port={self.port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=100",
                "-c",
                "shared_buffers=128MB",
                # A development box: a crash may lose the last commits of the OS cache, never corrupt the
                # cluster (fsync stays on); the sink's atomicity is PostgreSQL's either way.
                "-c",
                "synchronous_commit=off",
            ]
        )

    # -- lifecycle --

    def pid(self) -> int | None:
        """PID of our running server, if any."""
        return self.pid_file.live_pid("postgres", str(self.cluster))

    def answers(self) -> bool:
        return answers(HOST, self.port)

    def start(self) -> tuple[int, bool]:
        """Start the server unless ours is already running; (PID, whether this call started it)."""
        pid = self.pid()
        if pid is not None:
            if not wait_until(self._ready, timeout=self.start_timeout_s, interval=0.1):
                raise ServerStartError(
                    f"our PostgreSQL (pid {pid}) runs but does not answer on {self.address}; stop it with "
                    f"'crm-pulse infra down'. Log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            return pid, False
        if port_open(HOST, self.port):
            raise PortInUseError(
                f"{self.address} is taken by a process that is not our PostgreSQL (no live pid in "
                f"{self.pid_file.path}); stop it, or choose another port with CRM_PULSE_LOCAL__POSTGRES_PORT"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._init_cluster()
        log_start = log_size(self.log_file)
        pid = spawn_detached(self.command(), log_path=self.log_file, cwd=self.home)
        self.pid_file.write(pid)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready():
            if not is_alive(pid) or time.monotonic() >= deadline:
                self._stop_pid(pid, timeout=5.0)
                self.pid_file.remove()
                raise ServerStartError(
                    f"PostgreSQL did not accept connections on {self.address} within {self.start_timeout_s:.0f} s or "
                    f"exited. Log tail ({self.log_file}):\n" + log_tail(self.log_file, since=log_start)
                )
            time.sleep(0.1)
        self._create_database()
        return pid, True

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop our server if it runs (SIGINT: a fast shutdown, which ends open sessions); the PID it had."""
        pid = self.pid()
        if pid is not None:
            self._stop_pid(pid, timeout=timeout)
        self.pid_file.remove()
        return pid

    @staticmethod
    def _stop_pid(pid: int, *, timeout: float) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave.
        for signum, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            if wait_until(lambda: not is_alive(pid), timeout=wait):
                return

    def _ready(self) -> bool:
        """Whether the server accepts sessions of our user (not only TCP: it refuses them while starting)."""
        if not self.answers():
            return False
        return self._psql("postgres", "SELECT 1").returncode == 0

    def _psql(self, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        command = [
            self._tool("psql"),
            "-X",
            "-q",
            "-t",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]
        return subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)

    def _init_cluster(self) -> None:
        """Create the cluster once (``initdb``), owned by the user the server runs as."""
        cluster = self.cluster
        if (cluster / "PG_VERSION").is_file():
            return
        user = self._os_user()
        shutil.rmtree(cluster, ignore_errors=True)
        cluster.mkdir(parents=True, mode=0o700)
        if user is not None:
            for folder in (cluster, *cluster.parents):
                if folder in (self.home.parent, _SHARED_ROOT.parent) or folder == Path("/"):
                    break
                os.chown(folder, user.pw_uid, user.pw_gid)
        command = self._as_user(
            [
                self._tool("initdb"),
                "-D",
                str(cluster),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        done = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, cwd="/")
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()[-20:]
            shutil.rmtree(cluster, ignore_errors=True)
            raise ServerStartError(f"initdb of {cluster} failed (exit {done.returncode}):\n" + "\n".join(output))
        (self.home / "cluster").write_text(f"{cluster}\n")

    def _create_database(self) -> None:
        exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() == "1":
            return
        created = self._psql("postgres", f"CREATE DATABASE {DATABASE}")
        if created.returncode != 0:
            raise ServerStartError(f"could not create database {DATABASE}: {created.stderr.strip()}")
