"""Length-prefixed frames between the stream worker and its batch process (trusted, same host).

A frame is a 4-byte big-endian length and a pickle of a tuple. Both ends are this project's own
processes, started together; nothing else writes to these pipes.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import IO, Any

_HEADER = struct.Struct(">I")


def encode_frame(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
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
    message: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))
    return message
