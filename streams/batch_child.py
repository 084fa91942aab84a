"""The stream worker's batch process: applies the batches its faust parent hands it.

faust's per-message machinery takes one core's worth of Python; the KPI work (validation,
contributions, the Redis commit) runs here, in a child process, so the two overlap on
separate cores. The parent (:class:`streams.offload.BatchOffload`) writes requests to this
process's stdin and reads replies from its stdout, both as frames (see :mod:`streams.frames`).
Batches are applied strictly in the order they arrive, exactly as the in-process path would
apply them: same processor, same fenced commit, same dead-letter topic.

Requests: ``("batch", records, lag, floors)``, ``("forget",)`` (drop cached state after a rebalance),
``("sync",)`` (answered once everything before it is applied). Replies: ``("done", rewind)``,
one per batch (``rewind``: the partitions to read again, see ``BatchResult.rewind``),
``("synced",)`` and ``("failed", text)``.
It also relays the change feed to ``kpi.updates`` (:mod:`streams.updates_relay`), off faust's core.
The process ends at end of input, and with its parent (Linux parent-death signal).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services import kafka
from services.settings import load_settings
from services.topics import RedisKeys
from streams.dead_letters import KafkaDeadLetters
from streams.frames import read_frame, write_frame
from streams.processor import RETRY_INITIAL_S, RETRY_MAX_S, BatchProcessor, RawRecord, apply_until_done
from streams.store import OverlappedStore, PreviousCommitFailed
from streams.updates_relay import UpdatesRelay, producer_sender

log = logging.getLogger("streams.batch_child")

COMMIT_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1
MERGE_LIMIT = 5000
"""Records of waiting batches applied together in one commit, at most."""


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (a SIGKILLed worker leaves no orphan)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: end of input still stops it
        log.debug("parent-death signal not available")


@dataclass
class _Applied:
    """A batch (one or more merged requests) applied, its reply held until its commit applied."""

    records: list[RawRecord]
    lag: dict[str, int]
    floors: dict[str, int]
    requests: int
    rewind: dict[str, int]
    generation: int
    """The store's commit generation that must be applied before the reply goes out."""


class Applier:
    """Applies batches over an :class:`OverlappedStore` and replies to each once its commit applied.

    A batch's commit is sent while the next batch is worked on; the ``done`` replies go out in
    order, each after its commit applied. When a commit did not apply, every batch not yet answered
    is applied again, one at a time and each waited for, and only then answered.
    """

    def __init__(self, processor: BatchProcessor, store: OverlappedStore, out: Any) -> None:
        self.processor = processor
        self.store = store
        self.out = out
        self.unanswered: collections.deque[_Applied] = collections.deque()

    async def apply(self, records: list[RawRecord], lag: dict[str, int], floors: dict[str, int], requests: int) -> None:
        try:
            result = await apply_until_done(self.processor, records, lag, floors)
        except PreviousCommitFailed as failure:
            self.unanswered.append(_Applied(records, lag, floors, requests, {}, self.store.sent))
            await self._apply_again(failure)
            return
        self.unanswered.append(_Applied(records, lag, floors, requests, result.rewind, self.store.sent))
        self._answer()

    async def settle(self) -> None:
        """Wait until every batch so far is applied, and answer them."""
        try:
            await self.store.settle()
        except PreviousCommitFailed as failure:
            await self._apply_again(failure)
            return
        self._answer()

    async def _apply_again(self, failure: PreviousCommitFailed) -> None:
        log.warning("a commit did not apply (%s); applying its batch and the ones after it again", failure)
        delay = RETRY_INITIAL_S
        for applied in self.unanswered:
            while True:
                self.processor.forget()
                try:
                    result = await apply_until_done(self.processor, applied.records, applied.lag, applied.floors)
                    await self.store.settle()
                except PreviousCommitFailed as again:
                    log.warning("applying a batch again did not apply (%s); retrying in %.1fs", again, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                applied.rewind = result.rewind
                applied.generation = self.store.settled
                break
        self._answer()

    def _answer(self) -> None:
        answered = False
        while self.unanswered and self.unanswered[0].generation <= self.store.settled:
            applied = self.unanswered.popleft()
            for index in range(applied.requests):
                write_frame(self.out, ("done", applied.rewind if index == 0 else {}))
            answered = True
        if answered:
            self.out.flush()


async def serve(reader: asyncio.StreamReader, out: Any) -> None:
    settings = load_settings()
    redis = Redis.from_url(settings.redis.url, health_check_interval=10, socket_timeout=COMMIT_TIMEOUT_S)
    keys = RedisKeys.from_settings(settings)
    store = OverlappedStore(redis, keys, claim_ttl_s=(settings.business.history_retention_days + 2) * 86_400)
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    processor = BatchProcessor(settings, store, KafkaDeadLetters(producer, settings.kafka.dlq_topic))
    applier = Applier(processor, store, out)
    gc.freeze()  # what start-up built lives to the end: later collections need not walk it
    inbox: collections.deque[tuple[Any, ...] | None] = collections.deque()
    arrived = asyncio.Event()

    async def receive() -> None:
        while True:
            request = await read_frame(reader)
            inbox.append(request)
            arrived.set()
            if request is None:
                return

    receiver = asyncio.ensure_future(receive())
    # The change feed is relayed to kpi.updates from here, on this process's core, by a plain
    # aiokafka producer: in the worker process it took faust's producer path, on faust's core.
    relay = asyncio.ensure_future(
        UpdatesRelay(redis, keys, producer_sender(producer, settings.kafka.updates_topic)).run()
    )
    try:
        while True:
            while not inbox:
                if receiver.done():
                    receiver.result()  # raise what stopped it
                await applier.settle()  # idle: the last commit applied, its batch answered
                if inbox:
                    break
                arrived.clear()
                await arrived.wait()
            request = inbox.popleft()
            if request is None:
                await applier.settle()
                return
            kind = request[0]
            if kind == "batch":
                # Batches that queued up while the last one was applied go in one commit: fewer, larger
                # commits cost Redis and this process less per record. Each still gets its own reply.
                merged = [request]
                count = len(request[1])
                while inbox and inbox[0] is not None and inbox[0][0] == "batch" and count < MERGE_LIMIT:
                    following = inbox.popleft()
                    assert following is not None
                    merged.append(following)
                    count += len(following[1])
                records = [RawRecord(*fields) for batch in merged for fields in batch[1]]
                await applier.apply(records, merged[-1][2], merged[-1][3], len(merged))
                continue
            await applier.settle()  # the requests below concern everything applied before them
            if kind == "forget":
                processor.forget()
                continue
            reply: tuple[Any, ...] = ("synced",) if kind == "sync" else ("failed", f"unknown request {kind!r}")
            write_frame(out, reply)
            out.flush()
    finally:
        receiver.cancel()
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await producer.stop()
        await redis.aclose()


async def run() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer
    try:
        await serve(reader, out)
    except Exception as exc:  # the parent fails the worker with this text; the state is untouched
        log.exception("batch process failed")
        write_frame(out, ("failed", f"{type(exc).__name__}: {exc}"))
        out.flush()
        return 1
    return 0


def main() -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
