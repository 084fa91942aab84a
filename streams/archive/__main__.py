"""``python -m streams.archive [run|rebuild]``: run the archive sink, or rebuild the archive from Kafka.

``run`` (the default) migrates the schema, then archives every accepted event until SIGTERM or
Ctrl-C, resuming from the offsets the archive holds. ``rebuild`` empties the archive and archives the
whole events log again up to its end as of the start, with a progress bar, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiokafka.errors import KafkaError

from services import kafka
from services.archive.database import ArchiveError, connect, migrate
from services.settings import Settings, load_settings
from streams.archive.sink import ArchiveSink
from streams.replay import ProgressLine

PROG = "crm-pulse archive"
ARCHIVE_TABLES = ("events", "deals", "deal_history", "sink_offsets", "sink_counts")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


async def run(settings: Settings) -> int:
    migrate(settings.database.url)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    sink = ArchiveSink(settings)
    print(
        f"archive: {settings.kafka.events_topic} -> {settings.database.url.rpartition('@')[2]} "
        f"(group {settings.database.archive_group})",
        file=sys.stderr,
        flush=True,
    )
    totals = await sink.run(stop)
    print(
        f"archive: stopped; {totals.accepted} accepted, {totals.duplicates} duplicates, "
        f"{totals.rejected} rejected (skipped), {totals.skipped} already archived",
        file=sys.stderr,
    )
    return 0


async def rebuild(settings: Settings, *, force: bool, quiet: bool) -> int:
    members = await kafka.group_members(settings, settings.database.archive_group)
    if members and not force:
        print(
            f"{PROG} rebuild: {members} archive sink(s) of group {settings.database.archive_group} are running; "
            "stop them first (or pass --force for one killed moments ago)",
            file=sys.stderr,
        )
        return 1
    migrate(settings.database.url)
    connection = await connect(settings.database.url)
    try:
        async with connection.transaction():
            await connection.execute(f"TRUNCATE {', '.join(ARCHIVE_TABLES)}")
    finally:
        await connection.close()
    tps = await kafka.partition_ids(settings, settings.kafka.events_topic)
    total = await _records_in_log(settings, tps)
    progress = None if quiet else ProgressLine(total, "archive rebuild")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    totals = await ArchiveSink(settings).run(stop, until_end=True, progress=progress)
    if progress is not None:
        progress.close()
    print(
        f"archive rebuilt: {totals.accepted} events archived ({totals.duplicates} duplicates and "
        f"{totals.rejected} rejected records left out), {totals.deals} deal updates",
        file=sys.stderr,
    )
    return 0


async def _records_in_log(settings: Settings, partitions: list[int]) -> int:
    from aiokafka import TopicPartition

    consumer = kafka.consumer(settings, group_id=None, client_id="crm-pulse-archive-count")
    await consumer.start()
    try:
        tps = [TopicPartition(settings.kafka.events_topic, p) for p in partitions]
        starts, ends = await kafka.bounds(consumer, tps)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in tps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Archive every accepted event of crm.events, and the deals' state and history, in PostgreSQL.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("run", help="run the archive sink until Ctrl-C (the default)")
    rebuild_parser = actions.add_parser(
        "rebuild", help="empty the archive and archive the whole events log again, then exit"
    )
    rebuild_parser.add_argument("--force", action="store_true", help="rebuild even if the sink group has members")
    rebuild_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        if args.action == "rebuild":
            return asyncio.run(rebuild(settings, force=args.force, quiet=args.quiet))
        return asyncio.run(run(settings))
    except ArchiveError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(
            f"{PROG}: error: Kafka at {settings.kafka.bootstrap_servers} is unavailable ({exc}); start it with "
            "'crm-pulse infra up' or point KAFKA_BOOTSTRAP_SERVERS at a running broker",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
