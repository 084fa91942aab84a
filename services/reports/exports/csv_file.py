"""A table as CSV: a header of column labels, one line per row, then the totals row; exact values."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

from services.reports.table import CellValue, Table


def csv_value(value: CellValue) -> str:
    """Exact: a Decimal as written (``0.250000``), a date in ISO 8601, nothing for an undefined value."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def table_csv(table: Table) -> bytes:
    """UTF-8 CSV (with a byte-order mark, so spreadsheet programs read Cyrillic right)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([column.label for column in table.columns])
    for row in (*table.rows, *((table.totals,) if table.totals is not None else ())):
        writer.writerow([csv_value(row.get(column.key)) for column in table.columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
