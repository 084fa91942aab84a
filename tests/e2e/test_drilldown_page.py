"""Click a number on the wall display or the manager view: the events behind it, in headless Chromium.

The real worker, archive sink and API processes; screenshots go to test-artifacts/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import expect

from services.auth import Role
from services.settings import Settings
from tests.e2e.conftest import Screen, Stack, call, won_deal
from tests.integration.api_harness import wait_until
from tests.integration.archive_db import archived_rows, fresh_archive
from tests.integration.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LIVE_MS = 30_000
ARCHIVE_DEADLINE_S = 90.0


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    """This module's stacks also have an archive database of their own."""
    async with fresh_archive(make_settings()) as with_archive:
        yield with_archive


@pytest.fixture
async def archive_sink(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    sink = WorkerProcess(settings, tmp_path / "archive.log", module="streams.archive", args=("run",))
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


async def _archived(settings: Settings, count: int) -> bool:
    rows = await archived_rows(settings, "SELECT count(*) FROM events")
    return int(rows[0][0]) >= count  # type: ignore[call-overload]


async def test_clicking_numbers_lists_the_events_behind_them(
    stack: Stack, archive_sink: WorkerProcess, screen: Screen, settings: Settings
) -> None:
    events = [
        call("ann", "team-01", "c1"),
        call("ann", "team-01", "c2"),
        call("bo", "team-01", "c3"),
        *won_deal("bo", "team-01", "d1", "5000"),
    ]
    await stack.produce(*events)
    await stack.wait_for_measure("c", "deals_won", 1)
    await wait_until(lambda: _archived(settings, len(events)), within=ARCHIVE_DEADLINE_S, what="the archive sink")
    token = await stack.token(Role.DIRECTOR)

    page = screen.page
    await page.goto(f"{stack.api.base_url}/?scope=t:team-01&view=leaderboard&token={token}")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_MS)
    revenue = page.locator('[data-scope="total"][data-period="day"][data-kpi="revenue"]')
    await expect(revenue).to_have_text("$5,000")

    await revenue.click()
    panel = page.locator("#drilldown")
    await expect(panel).to_be_visible()
    await expect(panel.locator(".dd-summary")).to_have_text("1 events · $5,000")
    await expect(panel.locator("tbody tr")).to_have_count(1)
    await expect(panel.locator('tbody tr[data-event="d1-won"]')).to_contain_text("$5,000")
    await screen.screenshot("drilldown-wall-revenue")
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()

    await page.locator('#leaderboard tr[data-manager="ann"] [data-kpi="calls"]').click()
    await expect(panel.locator(".dd-summary")).to_have_text("2 events · 2")
    await expect(panel.locator("tbody tr")).to_have_count(2)
    await expect(panel.locator(".dd-title")).to_contain_text("ann")
    await panel.locator('th[data-sort="occurred_at"]').click()  # desc -> asc: c1 first
    await expect(panel.locator("tbody tr").first).to_have_attribute("data-event", "c1")
    await screen.screenshot("drilldown-wall-manager-calls")
    await panel.locator(".dd-close").click()

    await page.goto(f"{stack.api.base_url}/me?manager=bo")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_MS)
    tile = page.locator('[data-compare="deals_won"] [data-period="month"] [data-kpi="deals_won"]')
    await expect(tile).to_have_text("1")
    await tile.click()
    await expect(panel.locator(".dd-summary")).to_have_text("1 events · 1")
    await expect(panel.locator('tbody tr[data-event="d1-won"]')).to_be_visible()
    await screen.screenshot("drilldown-manager-view")
    screen.assert_no_script_errors()
