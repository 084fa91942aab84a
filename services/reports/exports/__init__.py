"""Exports of any ``Table`` (a report, a drill-down): CSV, XLSX and PDF, each written once for all.

``render(table, format)`` gives the bytes, the media type and a file name; the values are the
table's own (exact in CSV and XLSX; formatted for reading in PDF by ``formatting``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from services.reports.exports.csv_file import table_csv
from services.reports.exports.pdf_file import table_pdf
from services.reports.exports.xlsx_file import table_xlsx
from services.reports.table import Table


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"
    PDF = "pdf"


MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.PDF: "application/pdf",
}


@dataclass(frozen=True)
class Export:
    """One rendered export."""

    content: bytes
    media_type: str
    filename: str


def file_stem(title: str) -> str:
    """A file name from a title: letters (any script), digits and dashes."""
    stem = re.sub(r"[^\w]+", "-", title, flags=re.UNICODE).strip("-").lower()
    return stem or "report"


def render(table: Table, export_format: ExportFormat) -> Export:
    """The table as a file of the format."""
    if export_format is ExportFormat.CSV:
        content = table_csv(table)
    elif export_format is ExportFormat.XLSX:
        content = table_xlsx(table)
    else:
        content = table_pdf(table)
    return Export(content, MEDIA_TYPES[export_format], f"{file_stem(table.title)}.{export_format.value}")
