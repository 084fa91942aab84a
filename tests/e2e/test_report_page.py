"""The report page in headless Chromium against the real API process: a preset's table and chart
with the API's numbers, a run for another scope, a refused scope, and a CSV download equal to the
API's export. Screenshots go to test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from playwright.async_api import expect

from services.auth import Role
from services.reports.exports.formatting import format_cell
from services.reports.table import ColumnKind
from tests.e2e.conftest import Screen, Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

READY_MS = 15_000


async def seed(stack: Stack) -> str:
    """This month's calls, wins and revenue for three managers (money units: 1/10,000), and quotas."""
    month = datetime.now(UTC).astimezone(stack.settings.business.zone).strftime("%Y-%m")
    for manager, team in (("alice", "team-01"), ("bob", "team-01"), ("carol", "team-02")):
        await stack.redis.sadd(stack.keys.managers, manager)
        await stack.redis.sadd(stack.keys.teams, team)
        await stack.redis.sadd(stack.keys.team_managers(team), manager)
    for scope, calls, won, revenue in (
        ("m:alice", 3, 2, 50_000_000),
        ("m:bob", 5, 1, 7_500_000),
        ("m:carol", 7, 0, 0),
        ("t:team-01", 8, 3, 57_500_000),
        ("c", 15, 3, 57_500_000),
    ):
        await stack.redis.hset(
            stack.keys.bucket(scope, "month", month), mapping={"calls": calls, "deals_won": won, "revenue": revenue}
        )
    await stack.redis.hset(stack.keys.quotas(month), mapping={"alice": "300000000", "bob": "100000000"})
    return month


def shown(value: object, kind: str) -> str:
    """The Python exports' formatting of a JSON cell: the page must show the same."""
    if value is None:
        return "\u2013"
    column = ColumnKind(kind)
    return format_cell(Decimal(str(value)) if column is not ColumnKind.TEXT else str(value), column)


async def test_the_report_page_shows_the_apis_numbers_and_downloads_them(api_only: Stack, screen: Screen) -> None:
    await seed(api_only)
    token = await api_only.token(Role.DIRECTOR)
    page = screen.page
    await page.goto(f"{api_only.api.base_url}/reports?report=plan-execution&token={token}")
    await expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=READY_MS)

    table = (await api_only.http.get("/api/v1/reports/plan-execution/run")).json()
    rows = page.locator("#report-table tbody tr")
    await expect(rows).to_have_count(len(table["rows"]))
    for index, row in enumerate(table["rows"]):
        cells = rows.nth(index).locator("td")
        await expect(cells).to_have_text([shown(row.get(c["key"]), c["kind"]) for c in table["columns"]])
    await expect(page.locator("#report-chart rect.bar")).to_have_count(len(table["rows"]))
    await expect(page.locator("#report-title")).to_have_text("Plan execution per manager")
    await screen.screenshot("report-plan-execution")

    async with page.expect_download() as waiting:
        await page.locator('button[data-format="csv"]').click()
    download = await waiting.value
    path = await download.path()
    exported = (await api_only.http.get("/api/v1/reports/plan-execution/run", params={"format": "csv"})).content
    assert download.suggested_filename == "plan-execution-per-manager.csv"
    assert path is not None and path.read_bytes() == exported

    await page.locator("#report-scope").fill("t:team-01")
    await page.locator("#report-run").click()
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_have_attribute("data-key", "alice")
    screen.assert_no_script_errors()


async def test_a_team_lead_is_told_when_a_scope_is_not_theirs(api_only: Stack, screen: Screen) -> None:
    await seed(api_only)
    token = await api_only.token(Role.TEAM_LEAD, team_id="team-01")
    page = screen.page
    await page.goto(f"{api_only.api.base_url}/reports?report=manager-activity&scope=t:team-01&token={token}")
    await expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=READY_MS)
    await expect(page.locator("#report-table tbody tr")).to_have_count(2)

    await page.locator("#report-scope").fill("t:team-02")
    await page.locator("#report-run").click()
    await expect(page.locator("body")).to_have_attribute("data-state", "error")
    await expect(page.locator("#message")).to_contain_text("HTTP 403")
    await screen.screenshot("report-refused-scope")
    screen.assert_no_script_errors()
