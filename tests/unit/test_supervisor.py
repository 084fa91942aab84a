"""A demo killed with SIGKILL leaves no children behind: they get SIGTERM when the supervisor dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.localinfra.processes import is_alive

SUPERVISOR = """
import sys, time
from pathlib import Path
from services.supervisor import Supervisor
supervisor = Supervisor(Path(sys.argv[1]), {})
child = supervisor.start("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert is_alive(child)

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        deadline = time.monotonic() + 10
        while is_alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its supervisor"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
