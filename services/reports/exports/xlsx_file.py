"""A table as an Excel workbook: title and period, a bold frozen header, number formats by column
kind, a bold totals row, and a chart sheet of the table's chart (openpyxl)."""

from __future__ import annotations

import io
from datetime import date, datetime
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from services.reports.table import CellValue, ColumnKind, Table

NUMBER_FORMATS = {
    ColumnKind.COUNT: "#,##0",
    ColumnKind.MONEY: "#,##0.00",
    ColumnKind.RATIO: "0.00%",
    ColumnKind.DAYS: "0.00",
    ColumnKind.SECONDS: "#,##0",
    ColumnKind.DATE: "yyyy-mm-dd",
    ColumnKind.DATETIME: "yyyy-mm-dd hh:mm:ss",
}
HEADER_ROW = 4
"""Rows 1-2 hold the title and the period; the header sits on row 4, the data below it."""
HEADER_FILL = PatternFill("solid", fgColor="DDE3EA")


def _cell_value(value: CellValue) -> str | int | Decimal | date | datetime | None:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)  # Excel has no time zones: the instant as written
    return value


def table_xlsx(table: Table) -> bytes:
    """The workbook's bytes."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Report"
    sheet.cell(row=1, column=1, value=table.title).font = Font(bold=True, size=14)
    sheet.cell(row=2, column=1, value=f"{table.subtitle} · amounts in {table.currency}")
    for index, column in enumerate(table.columns, 1):
        cell = sheet.cell(row=HEADER_ROW, column=index, value=column.label)
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        sheet.column_dimensions[get_column_letter(index)].width = max(12, min(40, len(column.label) + 4))
    lines = [*table.rows, *((table.totals,) if table.totals is not None else ())]
    for offset, row in enumerate(lines, 1):
        is_total = table.totals is not None and offset == len(lines)
        for index, column in enumerate(table.columns, 1):
            cell = sheet.cell(row=HEADER_ROW + offset, column=index, value=_cell_value(row.get(column.key)))
            if column.kind in NUMBER_FORMATS:
                cell.number_format = NUMBER_FORMATS[column.kind]
            if is_total:
                cell.font = Font(bold=True)
    sheet.freeze_panes = f"A{HEADER_ROW + 1}"
    if table.chart is not None and table.rows:
        _chart_sheet(book, table)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _chart_sheet(book: Workbook, table: Table) -> None:
    """A chart sheet drawing the chart's y columns against its x column (the rows, not the totals)."""
    assert table.chart is not None
    sheet = book["Report"]
    keys = [column.key for column in table.columns]
    chart = LineChart() if table.chart.kind == "line" else BarChart()
    chart.title = table.title
    first, last = HEADER_ROW + 1, HEADER_ROW + len(table.rows)
    for key in table.chart.y:
        index = keys.index(key) + 1
        chart.add_data(Reference(sheet, min_col=index, min_row=HEADER_ROW, max_row=last), titles_from_data=True)
    x_index = keys.index(table.chart.x) + 1
    chart.set_categories(Reference(sheet, min_col=x_index, min_row=first, max_row=last))
    book.create_chartsheet("Chart").add_chart(chart)
