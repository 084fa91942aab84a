"""A faust app that does nothing with the events: the floor of faust's per-message cost.

``python -m bench.faust_noop --mode each|take --expected N --report-key KEY`` consumes the
configured events topic with the same faust options as the real worker (streams/app.py) and
an agent that only counts: ``async for value in stream: pass`` (``each``) or
``stream.take_events(batch_size, within)`` with the worker's batch settings (``take``). It
writes to the Redis hash KEY the wall-clock time and count at the first event (or batch), the
count every 10,000 events, and the time when the count reaches N, so the parent measures
throughput without process start-up and group join. Settings come from the environment.
"""

from __future__ import annotations

import argparse
import sys
import time

import faust
from faust.worker import Worker
from redis.asyncio import Redis

from services.settings import Settings, load_settings
from streams.app import faust_options

PROGRESS_EVERY = 10_000


class Tally:
    """Counts events and reports first/progress/last to a Redis hash."""

    def __init__(self, redis_url: str, key: str, expected: int) -> None:
        self.redis_url = redis_url
        self.key = key
        self.expected = expected
        self.count = 0
        self.next_report = PROGRESS_EVERY
        self.redis: Redis | None = None

    async def add(self, events: int) -> None:
        now = time.time()
        first = self.count == 0
        self.count += events
        if self.redis is None:
            self.redis = Redis.from_url(self.redis_url)
        if first:
            await self.redis.hset(self.key, mapping={"first_ts": repr(now), "first_count": self.count})
        if self.count >= self.expected:
            await self.redis.hset(self.key, mapping={"last_ts": repr(now), "count": self.count})
        elif self.count >= self.next_report:
            self.next_report += PROGRESS_EVERY
            await self.redis.hset(self.key, "count", self.count)


def create_app(settings: Settings, mode: str, tally: Tally) -> faust.App:
    app = faust.App(settings.kafka.consumer_group, **faust_options(settings))
    events = app.topic(settings.kafka.events_topic, partitions=settings.kafka.partitions)

    if mode == "each":

        @app.agent(events, concurrency=1)
        async def noop_each(stream: faust.StreamT[bytes]) -> None:
            async for _value in stream:
                await tally.add(1)

    else:

        @app.agent(events, concurrency=1)
        async def noop_take(stream: faust.StreamT[bytes]) -> None:
            batches = stream.take_events(  # type: ignore[attr-defined]
                settings.worker.batch_size, within=settings.worker.batch_within_s
            )
            async for batch in batches:
                await tally.add(len(batch))

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faust_noop",
        description="A no-op faust agent on the configured events topic (settings from the environment).",
    )
    parser.add_argument("--mode", choices=("each", "take"), required=True, help="per event, or take_events batches")
    parser.add_argument("--expected", type=int, required=True, help="events to count before writing last_ts")
    parser.add_argument("--report-key", required=True, help="Redis hash for first_ts/first_count/count/last_ts")
    parser.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    settings = load_settings()
    tally = Tally(settings.redis.url, args.report_key, args.expected)
    app = create_app(settings, args.mode, tally)
    Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
