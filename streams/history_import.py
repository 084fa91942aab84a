"""Import a history file: ``python -m streams.history_import events.jsonl`` (or ``crm-pulse import``).

The records go to the events topic first (Kafka stays the source of truth: a later replay
sees them), exactly as they are in the file, keyed by the contract's rule. Then the state
catches up in bulk through the same batch processor as replay, from the offsets the state
holds, so the live workers carry on from there instead of working through the history
one message at a time. Rejected records go to the dead-letter topic as always.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services import kafka
from services.kpis.reference import admit
from services.schemas.events import ValidationPolicy
from services.settings import Settings, load_settings
from streams.replay import (
    DEFAULT_BATCH,
    ProgressLine,
    ReplayStopped,
    add_batch_size_argument,
    replay,
    running_workers,
    unavailable,
)

log = logging.getLogger(__name__)


def record_key(line: bytes) -> bytes | None:
    """The contract's Kafka key: deal_id when present, else manager_id (None for unreadable lines)."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    for field in ("deal_id", "manager_id"):
        value = data.get(field)
        if isinstance(value, str):
            return value.encode()
    return None


def read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        for line in source:
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield stripped


@dataclass
class FileCheck:
    """What the worker will make of a file's records, checked before they are produced."""

    records: int = 0
    accepted: int = 0
    rejected: Counter[str] = dataclass_field(default_factory=Counter)
    """Rejected records by the contract's reason code."""
    duplicates: int = 0
    """Records whose event_id an earlier accepted record of the file has (ignored, not rejected)."""

    def report(self) -> str:
        """One line: accepted, rejected by reason, duplicates."""
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{count:,} {code}" for code, count in self.rejected.most_common())
        parts = [f"{self.accepted:,} accepted", f"{rejected:,} rejected" + (f" ({reasons})" if reasons else "")]
        parts.append(f"{self.duplicates:,} duplicate{'s' if self.duplicates != 1 else ''} (event_id seen before)")
        return f"{self.records:,} records: " + ", ".join(parts)


def check_file(path: Path, policy: ValidationPolicy, *, now: datetime) -> FileCheck:
    """What the worker will make of the file's records: the batch reference's admission (contract order,
    the watermark rising through the file, repeated ids). Ids the state accepted before are not known here."""
    admission = admit(read_lines(path), policy, now=now)
    rejected = Counter(str(code) for _, code in admission.rejected)
    accepted = len(admission.accepted)
    return FileCheck(accepted + sum(rejected.values()) + admission.duplicates, accepted, rejected, admission.duplicates)


async def produce_file(settings: Settings, path: Path, *, show_progress: bool = True) -> int:
    """Produce every non-empty line of the file to the events topic; returns how many."""
    total = sum(1 for _ in read_lines(path))
    progress = ProgressLine(total, "import") if show_progress else None
    producer = kafka.producer(settings, linger_ms=20, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    sent = 0
    try:
        pending = []
        for line in read_lines(path):
            pending.append(await producer.send(settings.kafka.events_topic, line, key=record_key(line)))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                sent += len(pending)
                if progress:
                    progress.advance(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        sent += len(pending)
        if progress:
            progress.advance(len(pending))
            progress.close()
    finally:
        await producer.stop()
    return sent


async def import_history(
    settings: Settings,
    path: Path,
    *,
    catch_up: bool = True,
    show_progress: bool = True,
    batch_size: int = DEFAULT_BATCH,
) -> Imported:
    """Produce the file's records, then (``catch_up``) bring the state up to date in bulk, unless the
    workers are running: they apply the records then."""
    try:
        await kafka.ensure_product_topics(settings)
        sent = await produce_file(settings, path, show_progress=show_progress)
    except KafkaError as exc:
        raise ImportStopped(
            f"{unavailable(exc, settings)} while producing the file: import it again once it is back (the "
            "events applied already are ignored by their event_id)"
        ) from exc
    if not catch_up:
        return Imported(sent)
    try:
        # Running workers apply the records anyway, and a bulk catch-up next to them would stop at
        # the first commit of theirs it meets: leave the records to them.
        workers = await running_workers(settings)
        if workers:
            return Imported(sent, workers=workers)
        await replay(settings, wipe=False, batch_size=batch_size, show_progress=show_progress)
    except (KafkaError, RedisError) as exc:
        raise ImportStopped(
            f"{unavailable(exc, settings)} while bringing the state up to date: the {sent:,} records are "
            "in the events topic; run `crm-pulse replay --keep` once it is back (not the import again)"
        ) from exc
    return Imported(sent, caught_up=True)


@dataclass(frozen=True)
class Imported:
    """What an import did."""

    sent: int
    """Records produced to the events topic."""
    caught_up: bool = False
    """Whether the import brought the state up to date itself."""
    workers: int = 0
    """The running workers found instead (members of their consumer group): they apply the records."""


class ImportStopped(Exception):
    """The import cannot go on; the message says why and what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crm-pulse import",
        description="Import a JSONL history file: produce it to the events topic, then bring the KPI state up "
        "to date in bulk so the workers carry on from there.",
    )
    parser.add_argument("file", type=Path, help="JSONL file, one CRM event per line (as the contract defines)")
    parser.add_argument(
        "--no-catch-up",
        action="store_true",
        help="only produce the records; leave applying them to the running workers",
    )
    add_batch_size_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"no such file: {args.file}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    started = time.monotonic()
    try:
        check = check_file(args.file, ValidationPolicy.from_settings(settings.business), now=datetime.now(UTC))
        imported = asyncio.run(
            import_history(
                settings,
                args.file,
                catch_up=not args.no_catch_up,
                show_progress=not args.quiet,
                batch_size=args.batch_size,
            )
        )
    except OSError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 1
    except (ImportStopped, ReplayStopped) as exc:
        print(f"crm-pulse import: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    if check.accepted == 0:
        print(
            f"crm-pulse import: nothing to import from {args.file}: {check.report()}; rejected records are in "
            f"the dead-letter topic {settings.kafka.dlq_topic} with their reasons",
            file=sys.stderr,
        )
        return 1
    print(f"imported {args.file} in {took:.1f}s: {check.report()}")
    if check.rejected:
        print(f"the rejected records are in the dead-letter topic {settings.kafka.dlq_topic} with their reasons")
    if imported.workers:
        print(
            f"done: the records are in Kafka and the {imported.workers} running worker(s) are applying them now; "
            "nothing more to do (for a bulk catch-up instead, stop the workers and run `crm-pulse replay --keep`)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
