"""Realistic CRM events for the demo, load tests and benchmarks: ``python -m services.simulator``.

Two modes. Live (``--rate N``, the default): N records per second, each event dated by the wall
clock as it is sent. History (``--fast`` or ``--rate 0``): as fast as possible, with simulated
event time following business hours, from ``--start`` for ``--days`` days, never past now.
Records go to Kafka (the default), the HTTP ingest endpoint, or a JSONL file. The generator itself
is :mod:`services.simulation`; this module is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError

from services.kafka import ensure_product_topics
from services.settings import Settings, load_settings
from services.simulation import SimRecord, Simulation, SimulationConfig, SimulationError
from services.simulation.pacing import Progress, RunReport, send_records
from services.simulation.sinks import FileSink, HttpSink, KafkaSink, RecordSink

DEFAULT_RATE = 20.0
DEFAULT_DAYS = 30.0
TOKEN_ENV = "CRM_PULSE_API_TOKEN"
"""Where --sink http finds its API token when --token is not given."""

__all__ = ["SimRecord", "Simulation", "SimulationConfig", "build_parser", "main"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-pulse simulate",
        description=(
            "Realistic CRM events (CONTRACT section 1) for the demo, load tests and benchmarks.\n\n"
            "Live mode (--rate N, the default): N records per second, each dated by the wall clock.\n"
            "History mode (--fast or --rate 0): as fast as possible, simulated event time in business hours\n"
            "of the configured time zone, from --start for --days days, never past now."
        ),
        epilog=(
            "Examples:\n"
            "  live demo, 50 events/s to Kafka:       --rate 50\n"
            "  30 days of history as fast as possible: --fast --days 30\n"
            "  test data with faults to a file:        --fast --count 100000 --duplicates 0.01 "
            "--out-of-order 0.05 --malformed 0.01 --sink file --out events.jsonl\n"
            "Counts of records by expected outcome are printed as JSON on stdout at the end."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pace = parser.add_argument_group("pace and window")
    pace.add_argument(
        "--rate",
        type=_non_negative(float),
        default=DEFAULT_RATE,
        help=f"live mode: records per second, dated by the wall clock (default {DEFAULT_RATE:g}); 0 = --fast",
    )
    pace.add_argument("--fast", action="store_true", help="history mode: as fast as possible, simulated event time")
    pace.add_argument(
        "--start",
        type=_parse_start,
        help="history start: a date (local midnight in the business time zone) or an RFC 3339 time "
        "(default: midnight --days days ago, or early enough for --count records to fit before now)",
    )
    pace.add_argument(
        "--days",
        type=_non_negative(float),
        help=f"history length in days (default {DEFAULT_DAYS:g} without --count); history always ends by now",
    )
    pace.add_argument("--count", type=_non_negative(int), help="stop after this many records, faults included")

    org = parser.add_argument_group("simulated organisation")
    org.add_argument("--seed", type=int, default=1, help="same seed and options, same records (default 1)")
    org.add_argument("--managers", type=int, default=12, help="sales managers in total (default 12)")
    org.add_argument("--teams", type=int, default=3, help="teams the managers are spread over (default 3)")
    org.add_argument(
        "--activity",
        type=float,
        default=1.0,
        help="scales each manager's calls and meetings per day, in (0, 1] (default 1; less for long histories)",
    )

    faults = parser.add_argument_group("test-data faults (fractions of records)")
    faults.add_argument("--duplicates", type=_fraction, default=0.0, help="byte-identical re-sends of earlier records")
    faults.add_argument("--out-of-order", type=_fraction, default=0.0, help="events delivered after later ones")
    faults.add_argument(
        "--malformed", type=_fraction, default=0.0, help="records breaking one contract rule each (every reason code)"
    )

    out = parser.add_argument_group("sink")
    out.add_argument(
        "--sink", choices=("kafka", "http", "file"), default="kafka", help="where records go (default kafka)"
    )
    out.add_argument("--topic", help="Kafka topic (default: settings kafka.events_topic)")
    out.add_argument("--url", help="API base URL for --sink http (default: from settings api.host/api.port)")
    out.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"API token (admin or director) for --sink http (default: ${TOKEN_ENV}); see docs/access.md",
    )
    out.add_argument("--batch-size", type=int, default=500, help="events per HTTP request (default 500)")
    out.add_argument("--out", help="JSONL file for --sink file ('-' for standard output)")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def _parse_start(text: str) -> date | datetime:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2024-03-01 or an RFC 3339 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a UTC offset, e.g. {text}+00:00")
    return moment


def _history_window(
    args: argparse.Namespace, simulation: Simulation, now: datetime
) -> tuple[datetime, datetime, int | None]:
    """Start and end of history mode, and an estimate of the records it brings (for progress)."""
    zone = simulation.calendar.zone
    per_day = simulation.expected_events_per_day() * (1 + args.duplicates + args.malformed)
    days = args.days if args.days is not None or args.count else DEFAULT_DAYS
    if isinstance(args.start, datetime):
        start = args.start
    else:
        if isinstance(args.start, date):
            first_day = args.start
        elif days is not None:
            first_day = now.astimezone(zone).date() - timedelta(days=math.ceil(days))
        else:  # --count alone: start early enough that the records end before now
            first_day = now.astimezone(zone).date() - timedelta(days=math.ceil(args.count / per_day * 1.25) + 1)
        start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=zone)
    if args.start is None or days is None:  # the last days up to now
        end = now
    else:
        end = min(start + timedelta(days=days), now)
    estimate = None if days is None else int(per_day * (end - start).total_seconds() / 86_400)
    return start, end, estimate


def _open_sink(args: argparse.Namespace, settings: Settings) -> RecordSink:
    if args.sink == "kafka":
        return KafkaSink(settings.kafka.bootstrap_servers, args.topic or settings.kafka.events_topic)
    if args.sink == "http":
        base_url = args.url or f"http://{settings.api.host}:{settings.api.port}"
        return HttpSink(base_url, batch_size=args.batch_size, token=args.token)
    return FileSink(args.out)


async def _run(args: argparse.Namespace, simulation: Simulation, sink: RecordSink) -> tuple[RunReport, dict[str, Any]]:
    now = datetime.now(UTC)
    live = bool(args.rate) and not args.fast
    if live:
        records = simulation.records(now, count=args.count, clock=lambda: datetime.now(UTC))
        window: dict[str, Any] = {"mode": "live", "rate": args.rate}
        progress_total, approximate = args.count, False
    else:
        start, end, estimate = _history_window(args, simulation, now)
        if start >= end:
            raise SimulationError(
                f"the history window is empty: start {start.isoformat()} is not before {end.isoformat()}; "
                "use an earlier --start"
            )
        records = simulation.records(start, end=end, count=args.count)
        window = {"mode": "history", "start": start.isoformat(), "end": end.isoformat()}
        progress_total = args.count if args.count else estimate
        approximate = not args.count
    stop = asyncio.Event()
    handled = _stop_on_signals(stop)
    progress = None if args.quiet else Progress(progress_total, approximate=approximate)
    try:
        async with sink:
            report = await send_records(records, sink, rate=args.rate if live else None, stop=stop, progress=progress)
    finally:
        for signum in handled:
            asyncio.get_running_loop().remove_signal_handler(signum)
    return report, window


def _stop_on_signals(stop: asyncio.Event) -> list[signal.Signals]:
    """Ctrl-C and SIGTERM end the run cleanly (sink flushed, summary printed), where the loop allows it."""
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            continue
        handled.append(signum)
    return handled


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; 0 when done or stopped (Ctrl-C), 1 on a sink or setup error, 2 on usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    live = bool(args.rate) and not args.fast
    if live and (args.start is not None or args.days is not None):
        parser.error(
            "--start and --days are for history mode (--fast or --rate 0); live mode dates events by the clock"
        )
    if args.sink == "file" and not args.out:
        parser.error("--sink file needs --out FILE ('-' for standard output)")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    settings = load_settings()
    try:
        config = SimulationConfig.from_business(
            settings.business,
            teams=args.teams,
            managers=args.managers,
            activity=args.activity,
            duplicates=args.duplicates,
            out_of_order=args.out_of_order,
            malformed=args.malformed,
        )
    except SimulationError as exc:
        parser.error(str(exc))
    simulation = Simulation(config, seed=args.seed)
    sink = _open_sink(args, settings)
    try:
        if args.sink == "kafka" and not args.topic:
            asyncio.run(ensure_product_topics(settings))
        report, window = asyncio.run(_run(args, simulation, sink))
    except SimulationError as exc:  # SinkError included
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"simulator: Kafka at {settings.kafka.bootstrap_servers} is not usable: {exc!r}", file=sys.stderr)
        return 1
    summary = {
        **window,
        "seed": args.seed,
        "sink": args.sink,
        "records": report.records,
        "expected": dict(sorted(report.expected.items())),
        "out_of_order": report.out_of_order,
        "elapsed_s": round(report.elapsed_s, 3),
        "records_per_s": round(report.records_per_s, 1),
        "stopped_early": report.stopped_early,
        "delivery": sink.stats.as_dict(),
    }
    print(json.dumps(summary), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
