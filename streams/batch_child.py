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
from typing import Any

from redis.asyncio import Redis

from services import kafka
from services.settings import load_settings
from services.topics import RedisKeys
from streams.dead_letters import KafkaDeadLetters
from streams.frames import read_frame, write_frame
from streams.processor import BatchProcessor, RawRecord, apply_until_done
from streams.store import StateStore
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


async def serve(reader: asyncio.StreamReader, out: Any) -> None:
    settings = load_settings()
    redis = Redis.from_url(settings.redis.url, health_check_interval=10, socket_timeout=COMMIT_TIMEOUT_S)
    keys = RedisKeys.from_settings(settings)
    store = StateStore(redis, keys, claim_ttl_s=(settings.business.history_retention_days + 2) * 86_400)
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    processor = BatchProcessor(settings, store, KafkaDeadLetters(producer, settings.kafka.dlq_topic))
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
                arrived.clear()
                await arrived.wait()
            request = inbox.popleft()
            if request is None:
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
                result = await apply_until_done(processor, records, merged[-1][2], merged[-1][3])
                for index in range(len(merged)):
                    write_frame(out, ("done", result.rewind if index == 0 else {}))
                out.flush()
                continue
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
