"""The archive sink on the real broker and PostgreSQL: exactly the accepted events, through SIGKILLs and a rebuild."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.kafka import ensure_product_topics
from services.kpis.reference import admit
from services.schemas.events import ValidationPolicy
from services.settings import Settings
from tests.integration.api_harness import wait_until
from tests.integration.archive_db import archived_rows, fresh_archive
from tests.integration.pipeline_checks import produce_simulated
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0
KILLS = 3
RESTART_BOUND_S = 5.0
"""A restarted sink (a static member: issue 19) writes again within this of its start."""


async def _accounted(settings: Settings) -> int:
    rows = await archived_rows(settings, "SELECT COALESCE(sum(value), 0) FROM sink_counts")
    return int(rows[0][0])  # type: ignore[call-overload]


async def _snapshot(settings: Settings) -> tuple[list[tuple[object, ...]], ...]:
    """Every table's content, in a fixed order."""
    return (
        await archived_rows(settings, "SELECT * FROM events ORDER BY event_id"),
        await archived_rows(settings, "SELECT * FROM deals ORDER BY deal_id"),
        await archived_rows(settings, "SELECT * FROM deal_history ORDER BY deal_id, seq"),
        await archived_rows(settings, "SELECT partition, next_offset FROM sink_offsets ORDER BY partition"),
    )


async def test_sigkilled_sink_ends_with_exactly_the_accepted_events(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base: Settings = make_settings(database={"batch_size": 300, "batch_within_s": 0.05})
    await ensure_product_topics(base)
    records = await produce_simulated(base, seed=21, days=20, count=6000)
    policy = ValidationPolicy.from_settings(base.business)
    admission = admit([record.value for record in records], policy, now=datetime.now(UTC))
    expected_ids = sorted(event.event_id for event in admission.accepted)
    assert admission.duplicates > 0 and admission.rejected

    async with fresh_archive(base) as settings:
        sink = WorkerProcess(settings, tmp_path / "archive.log", module="streams.archive", args=("run",))
        restarts: list[float] = []

        async def restart_writes_again() -> None:
            before = await _accounted(settings)
            started = time.monotonic()
            sink.start()
            await wait_until(
                lambda: _accounted_above(settings, before),
                within=RESTART_BOUND_S,
                what=f"the restarted sink's first batch (log:\n{sink.log_tail()})",
            )
            restarts.append(time.monotonic() - started)

        try:
            for kill in range(1, KILLS + 1):
                before = await _accounted(settings)
                if kill == 1:
                    sink.start()
                else:
                    await restart_writes_again()
                # Killed once it has written more (mid-stream: a batch may be in its transaction right now).
                await wait_until(
                    lambda before=before: _accounted_above(settings, before + 500),
                    within=DEADLINE_S,
                    what=f"the sink's progress before kill {kill}",
                )
                sink.kill()
                assert await _accounted(settings) < len(records), "the sink finished before it was killed"
            await restart_writes_again()
            await wait_until(
                lambda: _accounted_above(settings, len(records) - 1), within=DEADLINE_S, what="the sink's end"
            )
        finally:
            sink.stop()
        print(f"restarted sink's first batch: {', '.join(f'{s:.2f} s' for s in restarts)}")
        archived = await archived_rows(settings, "SELECT event_id FROM events ORDER BY event_id")
        counts = dict(await archived_rows(settings, "SELECT name, value FROM sink_counts"))
        offsets = await archived_rows(settings, "SELECT sum(next_offset) FROM sink_offsets")

        assert [event_id for (event_id,) in archived] == expected_ids
        assert counts == {
            "accepted": len(expected_ids),
            "duplicates": admission.duplicates,
            "rejected": len(admission.rejected),
        }
        assert offsets == [(len(records),)]
        won = Counter(
            status for (status,) in await archived_rows(settings, "SELECT status FROM deals WHERE status <> 'open'")
        )
        assert set(won) <= {"won", "lost", "unknown"}

        before_rebuild = await _snapshot(settings)
        rebuilt = subprocess.run(  # noqa: ASYNC221 - the test waits for the command, nothing else runs
            [sys.executable, "-m", "streams.archive", "rebuild", "--quiet"],
            env={**os.environ, **settings.to_environment()},
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert f"{len(expected_ids)} events archived" in rebuilt.stderr
        assert await _snapshot(settings) == before_rebuild


async def _accounted_above(settings: Settings, count: int) -> bool:
    return await _accounted(settings) > count
