"""Static group membership: each worker process on a host takes a stable slot, so its restart rejoins as itself.

Off unless ``worker.static_membership``: faust's partition assignor refuses a second static member
of a group (its ``on_assignment`` asserts the assignment's URL), so it suits one worker per group.

Kafka's static membership (``group.instance.id``) lets a restarted consumer take its partitions back
at once, without waiting for the session timeout of the member it replaces. That needs an id that
is the same across a restart and different for every worker running at once. Unless
``worker.instance_id`` names one, a worker takes the lowest free slot of its group on this host by
holding an exclusive ``flock`` on the slot's file for its whole life: the kernel releases it the
moment the process dies, even by SIGKILL, so the replacement gets the same slot (and id) while two
workers running at once never share one (the broker would fence one of them).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from services.settings import Settings

MAX_SLOTS = 256


class SlotsTaken(RuntimeError):
    """Every slot of the group on this host is held by a running worker."""


def claim_slot(directory: Path, group: str) -> tuple[int, IO[bytes]]:
    """The lowest free slot of ``group`` and the open file holding it (keep it open while the worker runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = (directory / f"{group}.{slot}.lock").open("ab")  # not inherited by exec'd children
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        return slot, handle
    raise SlotsTaken(f"{MAX_SLOTS} workers of group {group} already run on this host")


class Membership:
    """This worker's group instance id, with the slot it holds (if the id comes from one)."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self._handle: IO[bytes] | None = None
        self.instance_id: str | None = None
        if not settings.worker.static_membership:
            return
        configured = settings.worker.instance_id
        if configured is not None:
            self.instance_id = configured or None
            return
        group = settings.kafka.consumer_group
        slot, self._handle = claim_slot(directory, group)
        self.instance_id = f"{group}-{socket.gethostname()}-{slot}"

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
