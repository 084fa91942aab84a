"""The worker's side of its batch process (:mod:`streams.batch_child`).

faust delivers records in the worker process; the batch process applies them. Up to ``depth``
batches wait in the pipe, so faust keeps fetching while a batch is validated, reduced and
committed on the other core. Nothing about exactness depends on the hand-over: the batch
process applies batches in order with the same fenced commit as before, and a worker that dies
(or a batch process that dies: the worker then stops with its error) resumes from the offsets
the state holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from services.settings import Settings
from streams.frames import encode_frame, read_frame

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0

RecordRow = tuple[str, int, int, int, bytes | None, bytes]
"""A record as the tuple of :class:`streams.processor.RawRecord`'s fields, in order."""
Rewinder = Callable[[dict[str, int]], Awaitable[None]]
"""Moves the worker's reader back: ``topic:partition`` -> the offset the state needs next."""


class BatchProcessFailed(RuntimeError):
    """The batch process reported an error or ended; the worker must stop (and be restarted)."""


class BatchOffload:
    """Hands batches to a child process and keeps at most ``depth`` of them unanswered."""

    def __init__(self, settings: Settings, rewind: Rewinder, *, depth: int = 3) -> None:
        self.settings = settings
        self.rewind = rewind
        self.depth = depth
        self._process: asyncio.subprocess.Process | None = None
        self._waiting: collections.deque[asyncio.Future[tuple[Any, ...]]] = collections.deque()
        self._slots = asyncio.Semaphore(depth)
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._start_lock = asyncio.Lock()

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        async with self._start_lock:
            if self._process is None:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "streams.batch_child",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, **self.settings.to_environment()},
                    limit=2**24,
                )
                log.info("batch process started (pid %d)", self._process.pid)
                self._reader = asyncio.ensure_future(self._read_replies(self._process))
            return self._process

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                reply = await read_frame(process.stdout)
                if reply is None:
                    raise BatchProcessFailed(f"batch process ended (exit code {await process.wait()})")
                if reply[0] == "failed":
                    raise BatchProcessFailed(f"batch process failed: {reply[1]}")
                if reply[0] == "done" and reply[1]:
                    await self.rewind(reply[1])
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result(reply)
                self._slots.release()
        except BaseException as exc:  # every waiter must learn of it
            self._failure = exc if isinstance(exc, BatchProcessFailed) else BatchProcessFailed(repr(exc))
            while self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(self._failure)
            if not isinstance(exc, (asyncio.CancelledError, BatchProcessFailed)):
                raise

    async def _send(self, message: tuple[Any, ...], *, answered: bool) -> asyncio.Future[tuple[Any, ...]] | None:
        if self._failure is not None:
            raise self._failure
        process = await self._ensure_started()
        assert process.stdin is not None
        future: asyncio.Future[tuple[Any, ...]] | None = None
        if answered:
            await self._slots.acquire()
            if self._failure is not None:
                self._slots.release()
                raise self._failure
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
        process.stdin.write(encode_frame(message))
        await process.stdin.drain()
        return future

    async def submit(
        self, rows: Sequence[RecordRow], lag: dict[str, int], floors: dict[str, int]
    ) -> asyncio.Future[tuple[Any, ...]]:
        """Queue a batch of records, each as the tuple of RawRecord's fields; returns once it is in
        the pipe (waits while ``depth`` are unanswered)."""
        future = await self._send(("batch", rows, lag, floors), answered=True)
        assert future is not None
        return future

    @property
    def idle(self) -> bool:
        """No batch is waiting to be applied."""
        return not self._waiting

    async def forget(self) -> None:
        """Have the batch process drop its cached deal state (after a rebalance)."""
        await self._send(("forget",), answered=False)

    async def sync(self) -> None:
        """Wait until every batch queued before this call is applied (or raise why not)."""
        future = await self._send(("sync",), answered=True)
        assert future is not None
        await future

    async def stop(self) -> None:
        """Let the batch process finish what it holds, then end it."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("batch process %d did not stop in %.0fs; killing it", process.pid, STOP_TIMEOUT_S)
            process.kill()
            await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, BatchProcessFailed):
                await self._reader
