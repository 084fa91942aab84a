"""Sending records to a sink at a wall-clock rate or as fast as possible, with a progress line."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from services.simulation.faults import SimRecord
from services.simulation.sinks import RecordSink

CHUNK = 1_000


@dataclass
class RunReport:
    """What was sent, by expected outcome, and how fast."""

    records: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    out_of_order: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, records: list[SimRecord]) -> None:
        self.records += len(records)
        for record in records:
            self.expected[record.expected] += 1
            self.out_of_order += record.out_of_order


class Progress:
    """A one-line progress report on stderr: redrawn in place on a terminal, every 10 s otherwise."""

    def __init__(self, total: int | None, *, approximate: bool = False, stream: TextIO | None = None) -> None:
        self.total = total
        self.approximate = approximate
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self._interval = 0.25 if self.interactive else 10.0
        self._started = time.monotonic()
        self._last = self._started

    def update(self, report: RunReport, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        rate = report.records / elapsed
        parts = [f"{report.records:,}"]
        if self.total and self.approximate and (final or report.records >= self.total):
            # An estimate is for the way there: at the end (or once passed) the count is the news.
            parts[0] += " records" + ("" if final else f" (past the estimate of ~{self.total:,})")
        elif self.total:
            done = min(report.records / self.total, 1.0)
            mark = "~" if self.approximate else ""
            parts[0] += f"/{mark}{self.total:,} records ({done:.0%})"
            if rate > 0 and not final:
                remaining = max(self.total - report.records, 0) / rate
                parts.append(f"ETA {int(remaining) // 60}:{int(remaining) % 60:02d}")
        else:
            parts[0] += " records"
        parts.insert(1, f"{rate:,.0f}/s")
        rejected = sum(n for code, n in report.expected.items() if code not in ("ok", "duplicate"))
        parts.append(f"ok {report.expected['ok']:,} dup {report.expected['duplicate']:,} bad {rejected:,}")
        line = "simulator: " + "  ".join(parts)
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def send_records(
    records: Iterator[SimRecord],
    sink: RecordSink,
    *,
    rate: float | None,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Send records until they run out or ``stop`` is set: ``rate`` records/s, or unpaced if None."""
    report = RunReport()
    started = time.monotonic()
    stop = stop or asyncio.Event()
    while not stop.is_set():
        if rate:
            due = int(rate * (time.monotonic() - started)) - report.records
            if due <= 0:
                wait = (report.records + 1) / rate - (time.monotonic() - started)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=min(max(wait, 0.001), 0.1))
                except TimeoutError:
                    pass
                continue
            chunk = list(itertools.islice(records, min(due, CHUNK)))
        else:
            chunk = list(itertools.islice(records, CHUNK))
        if not chunk:
            break
        await sink.write(chunk)
        report.count(chunk)
        if progress is not None:
            progress.update(report)
        await asyncio.sleep(0)  # let signal handlers and the sink's I/O run between chunks
    report.elapsed_s = time.monotonic() - started
    report.stopped_early = stop.is_set()
    if progress is not None:
        progress.update(report, final=True)
    return report
