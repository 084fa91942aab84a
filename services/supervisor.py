"""Child processes of ``crm-pulse demo``: started with their output in log files, stopped in reverse order.

Each child runs in its own session, so Ctrl-C in the terminal reaches only the supervisor, which
then stops the children in the order it chooses (the last started first) by their PIDs. Each child
also asks Linux for a SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so a supervisor that
is SIGKILLed leaves no worker, API or simulator behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from services.localinfra.processes import log_size, log_tail

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies."""


def _terminate_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere nothing happens)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class ChildExitedError(Exception):
    """A child stopped on its own while it was meant to run."""


@dataclass
class Child:
    """A started component: its name, process and log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, since=self.log_start, lines=lines)


class Supervisor:
    """Starts children with a shared environment and stops all of them, last started first."""

    def __init__(self, logs_dir: Path, env: Mapping[str, str]) -> None:
        self.logs_dir = logs_dir
        self.env = dict(env)
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str]) -> Child:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        log_start = log_size(log_path)
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} crm-pulse demo: {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=functools.partial(_terminate_with_parent, os.getpid()),  # single-threaded: safe here
            )
        child = Child(name, process, log_path, log_start)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise ``ChildExitedError`` if a child has stopped, with the end of its log."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise ChildExitedError(
                    f"{child.name} (pid {child.pid}) exited with code {code}. Log tail ({child.log_path}):\n"
                    + child.tail()
                )

    def stop_all(self, *, timeout: float = 20.0) -> None:
        """Stop every child, last started first: SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        for child in reversed(self.children):
            _stop(child, timeout)
        self.children.clear()

    def wait_http_ok(self, url: str, *, timeout: float) -> None:
        """Wait until ``url`` answers 200, failing early if a child exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if _http_ok(url):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
            time.sleep(0.5)


def _stop(child: Child, timeout: float) -> None:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(timeout=10)
    # The child led its own process group (PGID = its PID): end helpers it left behind, e.g. uvicorn workers.
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _http_ok(url: str) -> bool:
    try:
        with urlopen(url, timeout=2.0) as response:
            return int(response.status) == 200
    except (URLError, OSError, ValueError):
        return False
