"""The report routes on a served API and real Redis: presets and specs run with the KPI routes' numbers,
their CSV, XLSX and PDF exports read back to the JSON's numbers, and saved reports keep their owner."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openpyxl
import pytest

from dashboard_api.app import API_PREFIX
from services.reports.exports.formatting import format_cell
from services.reports.exports.xlsx_file import HEADER_ROW
from services.reports.saved import restore_saved_reports
from services.reports.table import ColumnKind
from tests.integration.api_harness import FIXED_NOW, running_api

if TYPE_CHECKING:
    from services.settings import Settings
    from tests.integration.api_harness import RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

REPORTS = f"{API_PREFIX}/reports"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".local" / "test-artifacts"
MONTH = FIXED_NOW.strftime("%Y-%m")
ACTIVITY = {"m:alice": (3, 2, 50_000_000), "m:bob": (5, 1, 7_500_000), "m:carol": (7, 0, 0)}
"""Calls, deals won and revenue (money units) this month per manager; alice and bob are in team-01."""


async def seed(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01", "bob": "team-01", "carol": "team-02"})
    for scope, (calls, won, revenue) in ACTIVITY.items():
        await api.write_bucket(scope, "month", MONTH, {"calls": calls, "deals_won": won, "revenue": revenue})
    await api.write_bucket("t:team-01", "month", MONTH, {"calls": 8, "deals_won": 3, "revenue": 57_500_000})
    await api.write_bucket("c", "month", MONTH, {"calls": 15, "deals_won": 3, "revenue": 57_500_000})
    await api.redis.hset(api.keys.quotas(MONTH), mapping={"alice": "300000000", "bob": "100000000"})


def as_text(value: Any) -> str:
    """A JSON cell as the CSV writes it (Decimals come as strings in JSON)."""
    return "" if value is None else str(value)


async def test_a_preset_runs_with_the_kpi_routes_numbers(api: RunningApi) -> None:
    await seed(api)
    table = (await api.http.get(f"{REPORTS}/plan-execution/run")).json()
    by_manager = {row["key"]: row for row in table["rows"]}

    assert set(by_manager) == {"alice", "bob", "carol"}
    for manager, row in by_manager.items():
        screen = (await api.http.get(f"{API_PREFIX}/kpis/managers/{manager}", params={"period": "month"})).json()
        assert Decimal(row["revenue"]) == Decimal(screen["kpis"]["revenue"])
        attainment = screen["kpis"]["quota_attainment"]
        assert row["quota_attainment"] == attainment, manager
    assert [row["key"] for row in table["rows"]] == ["alice", "bob", "carol"]  # best attainment first
    assert Decimal(by_manager["alice"]["quota_attainment"]) > Decimal(by_manager["bob"]["quota_attainment"]) > 0
    assert by_manager["carol"]["quota_attainment"] is None  # no quota: undefined, not zero


async def test_a_saved_report_runs_for_another_scope_and_period(api: RunningApi) -> None:
    await seed(api)
    await api.write_bucket("m:alice", "month", "2026-10", {"calls": 11})
    team = (await api.http.get(f"{REPORTS}/manager-activity/run", params={"scope": "t:team-01"})).json()
    october = (
        await api.http.get(f"{REPORTS}/manager-activity/run", params={"scope": "t:team-01", "at": "2026-10"})
    ).json()

    assert {row["key"]: row["calls"] for row in team["rows"]} == {"alice": 3, "bob": 5}
    assert {row["key"]: row["calls"] for row in october["rows"]} == {"alice": 11, "bob": 0}


async def test_every_export_holds_the_tables_numbers(api: RunningApi, tmp_path: Path) -> None:
    await seed(api)
    spec = {
        "title": "Выполнение плана",
        "group_by": "manager",
        "kpis": ["calls", "revenue", "quota_attainment", "win_rate"],
        "comparison": "previous_period",
    }
    table = (await api.http.post(f"{REPORTS}/run", json=spec)).json()
    columns = [column["key"] for column in table["columns"]]
    expected = [[as_text(row.get(key)) for key in columns] for row in [*table["rows"], table["totals"]]]

    as_csv = await api.http.post(f"{REPORTS}/run", json=spec, params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert lines[0] == [column["label"] for column in table["columns"]]
    assert lines[1:] == expected

    as_xlsx = await api.http.post(f"{REPORTS}/run", json=spec, params={"format": "xlsx"})
    book = openpyxl.load_workbook(io.BytesIO(as_xlsx.content))
    sheet = book["Report"]
    assert sheet.cell(row=1, column=1).value == spec["title"] and "Chart" in book.sheetnames
    cells = [[as_text(cell.value) for cell in row] for row in sheet.iter_rows(min_row=HEADER_ROW, max_col=len(columns))]
    assert cells[0] == lines[0]
    assert [[as_number(value) for value in row] for row in cells[1:]] == [
        [as_number(value) for value in row] for row in expected
    ]

    as_pdf = await api.http.post(f"{REPORTS}/run", json=spec, params={"format": "pdf"})
    assert as_pdf.content.startswith(b"%PDF")
    text = await asyncio.to_thread(pdf_text_and_png, as_pdf.content, tmp_path / "report.pdf")
    assert "Выполнение плана" in text
    kinds = {column["key"]: ColumnKind(column["kind"]) for column in table["columns"]}
    shown = [
        format_cell(Decimal(value) if kinds[key] is not ColumnKind.TEXT else value, kinds[key])
        for row in [*table["rows"], table["totals"]]
        for key, value in row.items()
        if key in kinds and value is not None
    ]
    missing = [figure for figure in shown if figure not in text]
    assert shown and missing == []
    assert "5,000.00" in text  # alice's revenue, as a person reads it
    assert (ARTIFACTS / "report.png").stat().st_size > 0


def pdf_text_and_png(content: bytes, pdf: Path) -> str:
    """The PDF's text (pdftotext), its first page kept as .local/test-artifacts/report.png (pdftoppm)."""
    assert shutil.which("pdftotext"), "poppler-utils missing: scripts/setup installs it"
    pdf.write_bytes(content)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-singlefile", str(pdf), str(ARTIFACTS / "report")], check=True)
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def as_number(text: str) -> Decimal | str:
    """A number as a Decimal (an XLSX cell holds 5000.0 where the JSON says "5000.0000"), else the text."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return text


async def test_saved_reports_keep_their_owner_and_sharing(settings: Settings) -> None:
    async with running_api(settings) as api:
        await saved_reports_keep_their_owner_and_sharing(api)
        assert await api.redis.hlen(api.keys.saved_reports) == 0  # deleted, through the log
        await api.http.put(f"{REPORTS}/kept", json={"spec": {"kpis": ["calls"]}, "shared_with": ["director"]})
        await api.redis.delete(api.keys.saved_reports, api.keys.saved_report_offsets)  # Redis lost them
        assert (await api.http.get(f"{REPORTS}/kept")).status_code == 404

        assert await restore_saved_reports(settings, api.redis) == 1
        kept = (await api.http.get(f"{REPORTS}/kept")).json()
        assert kept["shared_with"] == ["director"] and kept["spec"]["kpis"] == ["calls"]


async def test_a_change_kafka_did_not_take_is_a_503_and_not_saved(api: RunningApi) -> None:
    refused = await api.http.put(f"{REPORTS}/mine", json={"spec": {"kpis": ["calls"]}})

    assert refused.status_code == 503
    assert "was not written" in refused.json()["detail"] and "Retry" in refused.json()["detail"]
    assert (await api.http.get(f"{REPORTS}/mine")).status_code == 404


async def saved_reports_keep_their_owner_and_sharing(api: RunningApi) -> None:
    await seed(api)
    alice = {"Authorization": f"Bearer {await api.token('manager', manager_id='alice')}"}
    bob = {"Authorization": f"Bearer {await api.token('manager', manager_id='bob')}"}
    lead = {"Authorization": f"Bearer {await api.token('team_lead', team_id='team-01')}"}
    draft = {"spec": {"title": "My calls", "scope": {"kind": "manager", "id": "alice"}, "kpis": ["calls"]}}

    saved = await api.http.put(f"{REPORTS}/my-calls", json=draft, headers=alice)
    assert saved.status_code == 200, saved.text
    assert saved.json()["owner_name"] == "test manager"
    assert "my-calls" in {r["id"] for r in (await api.http.get(REPORTS, headers=alice)).json()}
    assert "my-calls" not in {r["id"] for r in (await api.http.get(REPORTS, headers=bob)).json()}
    assert (await api.http.get(f"{REPORTS}/my-calls/run", headers=bob)).status_code == 404
    assert (await api.http.get(f"{REPORTS}/my-calls/run", headers=alice)).json()["rows"][0]["calls"] == 3

    shared = await api.http.put(f"{REPORTS}/my-calls", json=draft | {"shared_with": ["team_lead"]}, headers=alice)
    assert shared.status_code == 200
    assert (await api.http.get(f"{REPORTS}/my-calls/run", headers=lead)).json()["rows"][0]["calls"] == 3
    taken = await api.http.put(f"{REPORTS}/my-calls", json=draft, headers=lead)
    assert taken.status_code == 403 and "belongs to" in taken.json()["detail"]
    preset = await api.http.put(f"{REPORTS}/sales-funnel", json=draft)
    assert preset.status_code == 403 and "preset" in preset.json()["detail"]

    assert (await api.http.delete(f"{REPORTS}/my-calls", headers=bob)).status_code == 403
    assert (await api.http.delete(f"{REPORTS}/my-calls", headers=alice)).status_code == 204
    assert (await api.http.get(f"{REPORTS}/my-calls", headers=alice)).status_code == 404


async def test_bad_reports_get_the_reason(api: RunningApi) -> None:
    misfit = await api.http.post(f"{REPORTS}/run", json={"group_by": "day", "kpis": ["stage_entries"]})
    unknown = await api.http.get(f"{REPORTS}/no-such-report/run")
    bad_period = await api.http.get(f"{REPORTS}/manager-activity/run", params={"period": "month", "at": "2026-13"})
    catalogue = (await api.http.get(f"{REPORTS}/catalogue")).json()

    assert misfit.status_code == 422 and "cannot be grouped by day" in misfit.text
    assert unknown.status_code == 404 and "GET /api/v1/reports lists them" in unknown.json()["detail"]
    assert bad_period.status_code == 422 and "2026-13" in bad_period.json()["detail"]
    assert "stage_entries" in catalogue["groupings"]["stage"]
    assert "stage_entries" not in catalogue["groupings"]["day"]
