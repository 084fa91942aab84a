"""Servers run detached from the process that starts them, remembered by a pid file, stopped by PID.

A server is started through a tiny launcher process that starts it in a new session and exits,
so the server outlives ``crm-pulse infra up`` and is never a child (nor a zombie) of a long-lived
caller such as the test session. A pid file is trusted only while its process is alive and its
command line still names the server, so a recycled PID is never signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from services.localinfra.errors import MissingToolError, ServerStartError

# Runs in a fresh interpreter: start argv[2:] in its own session, output appended to argv[1], print its PID.
_LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(
        sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
print(child.pid)
"""


def spawn_detached(argv: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, output appended to ``log_path``) and return its PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launched = subprocess.run(
        [sys.executable, "-I", "-c", _LAUNCHER, str(log_path), *argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if launched.returncode != 0:
        raise ServerStartError(f"could not start {argv[0]}: {launched.stderr.strip().splitlines()[-1:]}")
    return int(launched.stdout.strip())


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead, and is reaped if it is our child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _state(pid) in ("Z", "X"):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def command_line(pid: int) -> str:
    """The process's command line as one string ('' when unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


class PidFile:
    """A file holding the PID of a server we started."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def live_pid(self, *markers: str) -> int | None:
        """The recorded PID if that process is alive and its command line holds every marker.

        A stale pid file (dead process, or a PID since reused by another program) is removed.
        """
        pid = self.read()
        if pid is None:
            return None
        if is_alive(pid) and all(marker in command_line(pid) for marker in markers):
            return pid
        self.remove()
        return None


def terminate(pid: int, *, timeout: float = 30.0) -> bool:
    """Stop ``pid``: SIGTERM, wait up to ``timeout`` s, then SIGKILL. True when it stopped on SIGTERM."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_until(lambda: not is_alive(pid), timeout=timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    wait_until(lambda: not is_alive(pid), timeout=10.0)
    return False


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` s pass; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_text(path: Path, *, since: int = 0) -> str:
    """What was written to a log after byte offset ``since`` ('' when there is no log)."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, *, since: int = 0, lines: int = 40) -> str:
    """The last ``lines`` lines of a log written after byte offset ``since``."""
    if not path.exists():
        return f"(no log at {path})"
    tail = log_text(path, since=since).splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(nothing written to {path})"


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def require_tool(name: str, hint: str) -> str:
    """The path of program ``name`` on PATH, or a clear error saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise MissingToolError(f"{name!r} is not installed (not found on PATH): {hint}")
    return found
