"""Detached processes, pid files and stopping by PID, with real short-lived processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.localinfra.processes import PidFile, is_alive, log_tail, spawn_detached, terminate, wait_until


def test_a_detached_process_is_not_our_child_and_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    pid = spawn_detached(
        [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"], log_path=log, cwd=tmp_path
    )
    try:
        assert is_alive(pid)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert wait_until(lambda: "sleeping" in log_tail(log), timeout=10)
    finally:
        stopped_on_sigterm = terminate(pid, timeout=10)
    assert stopped_on_sigterm
    assert not is_alive(pid)


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "stubborn.log"
    pid = spawn_detached([sys.executable, "-c", code], log_path=log, cwd=tmp_path)
    assert wait_until(lambda: "ready" in log_tail(log), timeout=10)
    assert terminate(pid, timeout=0.5) is False
    assert not is_alive(pid)


def test_pid_file_trusts_only_a_live_process_with_the_expected_command_line(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "server.pid")
    assert pid_file.live_pid("python") is None

    pid_file.write(os.getpid())
    assert pid_file.live_pid("python") == os.getpid()
    assert pid_file.live_pid("definitely-not-in-this-command-line") is None
    assert not pid_file.path.exists(), "a pid file naming another program is stale and removed"

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid_file.write(int(finished.stdout))
    assert pid_file.live_pid("python") is None
    assert not pid_file.path.exists()


def test_log_tail_reads_only_what_was_written_since_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old run\n")
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write("new run\nready\n")
    assert log_tail(log, since=offset) == "new run\nready"
    assert log_tail(log, since=offset, lines=1) == "ready"
    assert "no log" in log_tail(tmp_path / "missing.log")
