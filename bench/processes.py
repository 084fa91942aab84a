"""Child processes of a bench (worker, faust no-op app, replay, API): started, measured, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.settings import Settings

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # fields 3.. of stat (the name may hold spaces)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time a live process and its children, live or ended, have used so far (None
    when unknown).

    The children count because a stream worker applies its batches in a child process, and a replay
    reads the log in one (which ends before the replay does: its time is then the parent's cutime).
    """
    if pid is None:
        return None
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime, stime, and cutime, cstime of the children waited for (fields 14 to 17 of stat)
    ticks = sum(int(value) for value in fields[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _stat_fields(entry.name)
            if child is not None and child[1] == str(pid):  # ppid (field 4)
                ticks += int(child[11]) + int(child[12])
    return ticks / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, not idle or waiting for I/O) since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


class CpuWindow:
    """CPU seconds used by some processes, and by the machine in all, between ``begin`` and ``end``.

    ``others`` in the result is what the rest of the machine used meanwhile (another developer's
    tests, say): a figure taken while it was large is noisy.
    """

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = dict(pids)
        self.start: dict[str, float | None] = {}
        self.machine_start = 0.0

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_start = machine_busy_seconds()

    def end(self) -> dict[str, float | None]:
        used: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.start.get(name)
            used[name] = round(now - then, 2) if now is not None and then is not None else None
        machine = machine_busy_seconds() - self.machine_start
        used["others"] = round(max(0.0, machine - sum(v for v in used.values() if v is not None)), 2)
        return used


class ChildProcess:
    """``python -m <module>`` with the settings in its environment and its output in a log file."""

    def __init__(
        self,
        label: str,
        module: str,
        args: Sequence[str],
        settings: Settings,
        log_path: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        python_args: Sequence[str] = (),
    ) -> None:
        self.label = label
        self.argv = [sys.executable, *python_args, "-m", module, *args]
        self.env = {**os.environ, **settings.to_environment(), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.started_at = time.monotonic()
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.running() else None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` s."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to this PID, SIGKILL after ``timeout`` s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
