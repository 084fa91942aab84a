"""Static group membership: each consumer-group member process on a host holds a stable slot, so its
restart rejoins the group as itself (issue 19).

Kafka's static membership (``group.instance.id``, Kafka >= 2.3) lets a restarted consumer take its
partitions back at once, without waiting for the session timeout of the member it replaces: the
broker hands the new incarnation the old one's assignment and fences the old one. That needs an id
that is the same across a restart and different for every member running at once. A process takes
the lowest free slot of its group on this host by holding an exclusive ``flock`` on the slot's file
for its whole life: the kernel releases it the moment the process dies, even by SIGKILL, so the
replacement gets the same slot (and id) while two members running at once never share one (the
broker would fence one of them, and faust's assignor would refuse the other's assignment).

A member gone for good (its slot not restarted) keeps its partitions until the session timeout
(``membership.session_timeout_s``) ends; a planned stop leaves at once (``services.group_leave``).
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path
from typing import IO, Any

from services.settings import Settings

MAX_SLOTS = 256


class SlotsTaken(RuntimeError):
    """Every slot of the group on this host is held by a running member."""


def slots_directory() -> Path:
    """Where the slot files live: one directory per host, shared by every process of the product."""
    return Path(tempfile.gettempdir()) / "crm-pulse-slots"


def claim_slot(directory: Path, group: str) -> tuple[int, IO[bytes]]:
    """The lowest free slot of ``group`` and the open file holding it (keep it open while the member runs)."""
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
    raise SlotsTaken(f"{MAX_SLOTS} members of group {group} already run on this host")


class Membership:
    """This process's member id in one consumer group (``None`` = a dynamic member), with the slot it holds."""

    def __init__(
        self, settings: Settings, group: str, *, configured: str | None = None, directory: Path | None = None
    ) -> None:
        self.group = group
        self.session_timeout_s = settings.membership.session_timeout_s
        self.heartbeat_s = settings.membership.heartbeat_s
        self._handle: IO[bytes] | None = None
        self.instance_id: str | None = None
        if not settings.membership.static:
            return
        if configured is not None:
            self.instance_id = configured or None
            return
        slot, self._handle = claim_slot(directory or slots_directory(), group)
        self.instance_id = f"{group}-{socket.gethostname()}-{slot}"

    def consumer_options(self) -> dict[str, Any]:
        """Keyword arguments of an ``AIOKafkaConsumer`` joining as this member."""
        return {
            "group_instance_id": self.instance_id,
            "session_timeout_ms": int(self.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_s * 1000),
        }

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
