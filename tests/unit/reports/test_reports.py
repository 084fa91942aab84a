"""The report planner, assembler and exports: rows, comparisons, totals, and files read back."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from services.kpis.measures import derive_kpis, with_quota
from services.kpis.periods import Period, PeriodKind, day_range, period_of
from services.reports.assemble import ReadState, build_table, change_key, compare_key
from services.reports.exports import ExportFormat, render
from services.reports.exports.formatting import EMPTY, format_cell
from services.reports.planner import Directory, plan_report, same_period_last_year, split_period
from services.reports.presets import PRESETS
from services.reports.table import ColumnKind, Table
from services.schemas.reports import GroupBy, ReportPeriod, ReportScope, ReportSpec

TODAY = date(2026, 11, 27)
STAGES = ("new", "qualified", "proposal", "negotiation")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def measures_for(token: str, period: Period) -> dict[str, int]:
    """Distinct measures per read, so a figure tells which read it came from."""
    seed = (sum(map(ord, token)) + period.start.toordinal() + (period.end - period.start).days) % 97 + 1
    return {
        "calls": seed,
        "deals_won": seed % 5,
        "deals_lost": seed % 3,
        "revenue": seed * 12_345,
        "stage:new": seed,
        "src_created:web": seed,
        "lost:price": seed % 3,
    }


def state_of(plan_reads: list, quotas: dict | None = None) -> ReadState:  # type: ignore[type-arg]
    return ReadState(
        measures={(r.token, r.period): measures_for(r.token, r.period) for r in plan_reads},
        current={},
        quotas=quotas or {},
    )


def test_split_period_cuts_weeks_at_the_bounds_and_covers_the_period() -> None:
    month = period_of(PeriodKind.MONTH, TODAY)
    weeks = split_period(month, GroupBy.WEEK)
    assert weeks[0] == day_range(date(2026, 11, 1), date(2026, 11, 2))  # Sunday 1 Nov: W44 cut
    assert weeks[-1] == day_range(date(2026, 11, 30), date(2026, 12, 1))
    days = [day for piece in weeks for day in piece.days()]
    assert days == list(month.days())


def test_same_period_last_year() -> None:
    assert same_period_last_year(period_of(PeriodKind.DAY, date(2028, 2, 29))).start == date(2027, 2, 28)
    assert (
        same_period_last_year(period_of(PeriodKind.WEEK, date(2026, 12, 31))).label == "2025-W52"
    )  # 2026-W53; 2025 has 52 weeks
    assert same_period_last_year(period_of(PeriodKind.MONTH, TODAY)).label == "2025-11"


def test_manager_rows_with_quota_and_previous_period_equal_the_kpi_derivation() -> None:
    spec = ReportSpec(
        group_by=GroupBy.MANAGER,
        kpis=("revenue", "quota_attainment", "calls"),
        comparison="previous_period",
        filters={"managers": ["bob", "alice"]},
    )
    plan = plan_report(spec, today=TODAY, directory=Directory(managers=["carol", "bob", "alice"]), stages=STAGES)
    assert [row.key for row in plan.rows] == ["alice", "bob"]
    quotas = {("manager", "alice", "2026-11"): 1_000_000}
    table = build_table(plan, state_of(plan.reads(), quotas), probabilities={}, currency="USD")
    alice = table.rows[0]
    expected = with_quota(derive_kpis(measures_for("m:alice", plan.period)), 1_000_000)
    before = derive_kpis(measures_for("m:alice", plan.period.previous()))
    assert alice["revenue"] == expected.revenue
    assert alice["quota_attainment"] == expected.quota_attainment is not None
    assert alice[compare_key("calls")] == before.calls
    assert alice[change_key("calls")] == expected.calls - before.calls
    assert table.rows[1]["quota_attainment"] is None  # bob has no quota
    assert table.totals is not None and table.totals["calls"] == derive_kpis(measures_for("c", plan.period)).calls


def test_monthly_rows_of_a_year_sum_to_the_counts_of_their_pieces() -> None:
    spec = ReportSpec(period=ReportPeriod(kind=PeriodKind.YEAR, at="2026"), group_by=GroupBy.MONTH, kpis=("calls",))
    plan = plan_report(spec, today=TODAY, directory=Directory(), stages=STAGES)
    table = build_table(plan, state_of(plan.reads()), probabilities={}, currency="USD")
    assert [row["key"] for row in table.rows] == [f"2026-{m:02d}" for m in range(1, 13)]
    assert table.chart is not None and table.chart.kind == "line"


def test_specs_refuse_kpis_that_do_not_fit_the_grouping() -> None:
    with pytest.raises(ValueError, match="cannot be grouped by day"):
        ReportSpec(group_by=GroupBy.DAY, kpis=("open_deals",))
    with pytest.raises(ValueError, match="unknown KPI"):
        ReportSpec(kpis=("nope",))
    with pytest.raises(ValueError, match="needs the company scope"):
        ReportSpec(scope=ReportScope(kind="team", id="t1"), group_by=GroupBy.TEAM, kpis=("calls",))


def test_every_preset_plans_and_assembles() -> None:
    for preset in PRESETS.values():
        plan = plan_report(preset.spec, today=TODAY, directory=Directory(managers=["a"]), stages=STAGES)
        table = build_table(
            plan, state_of(plan.reads()), probabilities={s: Decimal("0.5") for s in STAGES}, currency="USD"
        )
        assert table.columns[0].key == "key" and table.rows, preset.id


def sample_table() -> Table:
    spec = ReportSpec(title="Активность менеджеров", group_by=GroupBy.MANAGER, kpis=("calls", "revenue", "win_rate"))
    plan = plan_report(spec, today=TODAY, directory=Directory(managers=["анна", "bob"]), stages=STAGES)
    return build_table(plan, state_of(plan.reads()), probabilities={}, currency="USD")


def test_csv_and_xlsx_read_back_to_the_exact_values() -> None:
    table = sample_table()
    lines = list(csv.reader(io.StringIO(render(table, ExportFormat.CSV).content.decode("utf-8-sig"))))
    assert lines[0] == [column.label for column in table.columns]
    rows = [*table.rows, table.totals]
    for line, row in zip(lines[1:], rows, strict=True):
        assert line[0] == row["key"]  # type: ignore[index]
        assert int(line[1]) == row["calls"]  # type: ignore[index]
        assert Decimal(line[2]) == row["revenue"]  # type: ignore[index]
    book = openpyxl.load_workbook(io.BytesIO(render(table, ExportFormat.XLSX).content))
    sheet = book["Report"]
    assert sheet.freeze_panes == "A5"
    assert "Chart" in book.sheetnames
    for offset, row in enumerate(rows, 5):
        assert sheet.cell(row=offset, column=1).value == row["key"]  # type: ignore[index]
        assert Decimal(str(sheet.cell(row=offset, column=3).value)) == row["revenue"]  # type: ignore[index]
        assert sheet.cell(row=offset, column=4).number_format == "0.00%"


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils missing: scripts/setup installs it")
def test_pdf_text_holds_the_title_in_cyrillic_and_every_figure(tmp_path: Path) -> None:
    table = sample_table()
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(render(table, ExportFormat.PDF).content)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Активность менеджеров" in text and "анна" in text
    for row in (*table.rows, table.totals):
        assert row is not None
        assert format_cell(row["revenue"], ColumnKind.MONEY) in text
        assert format_cell(row["win_rate"], ColumnKind.RATIO) in text
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "1", str(pdf), str(ARTIFACTS / "report")], check=True
    )
    assert (ARTIFACTS / "report-1.png").stat().st_size > 0


def test_format_cell() -> None:
    assert format_cell(Decimal("1234.5"), ColumnKind.MONEY) == "1,234.50"
    assert format_cell(Decimal("0.253333"), ColumnKind.RATIO) == "25.33 %"
    assert format_cell(None, ColumnKind.COUNT) == EMPTY
