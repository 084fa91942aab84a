"""Length-prefixed frames between this project's processes and the children they start (trusted,
same host, same interpreter): the stream worker and its batch process, a replay and its reader.

A frame is a 4-byte big-endian length and a :mod:`marshal` dump of a tuple (of tuples, lists,
dicts, strings, bytes, numbers and None). marshal writes a batch of record rows five times faster
than pickle; its format is only stable within a Python version, which both ends share: the parent
starts the child with its own interpreter. Nothing else writes to these pipes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import marshal
import signal
import struct
from typing import IO, Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
PR_SET_PDEATHSIG = 1


def encode_frame(message: tuple[Any, ...]) -> bytes:
    body = marshal.dumps(message)
    return _HEADER.pack(len(body)) + body


def write_frame(out: IO[bytes], message: tuple[Any, ...]) -> None:
    out.write(encode_frame(message))


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at a clean end of input."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    (size,) = _HEADER.unpack(header)
    message: tuple[Any, ...] = marshal.loads(await reader.readexactly(size))
    return message


def die_with_parent() -> None:
    """Ask Linux to kill this (child) process when its parent dies: a SIGKILLed parent leaves no orphan."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: end of input still stops it
        log.debug("parent-death signal not available")
