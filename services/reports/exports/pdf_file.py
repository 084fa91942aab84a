"""A table as a PDF page set: title, period, the chart and the table, in DejaVu Sans (Cyrillic too)
(ReportLab)."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, TableStyle
from reportlab.platypus import Table as PdfTable

from services.reports.exports.formatting import format_cell
from services.reports.table import CellValue, ColumnKind, Table

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
"""Where Debian's fonts-dejavu-core (and other distributions) put DejaVu Sans."""
FONT, FONT_BOLD = "DejaVuSans", "DejaVuSans-Bold"
NUMERIC_KINDS = frozenset({ColumnKind.COUNT, ColumnKind.MONEY, ColumnKind.RATIO, ColumnKind.DAYS, ColumnKind.SECONDS})
SERIES_COLOURS = (colors.HexColor("#2f6fb0"), colors.HexColor("#e07b39"), colors.HexColor("#3a9a5b"))


class FontMissing(RuntimeError):
    """DejaVu Sans is not installed: the PDF could not render Cyrillic."""


def _register_fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.exists() and bold.exists():
            pdfmetrics.registerFont(TTFont(FONT, str(regular)))
            pdfmetrics.registerFont(TTFont(FONT_BOLD, str(bold)))
            return
    raise FontMissing(
        f"DejaVu Sans not found in {', '.join(map(str, FONT_DIRS))}: install it (apt-get install fonts-dejavu-core)"
    )


def _number(value: CellValue) -> float:
    """A value for drawing only (bar heights); the printed figures stay exact."""
    return float(value) if isinstance(value, int | Decimal) and not isinstance(value, bool) else 0.0


def _chart(table: Table, width: float) -> Drawing | None:
    chart_spec = table.chart
    if chart_spec is None or not table.rows:
        return None
    height = 60 * mm
    drawing = Drawing(width, height)
    chart = HorizontalLineChart() if chart_spec.kind == "line" else VerticalBarChart()
    chart.x, chart.y = 40, 25
    chart.width, chart.height = int(width - 60), int(height - 40)
    chart.data = [[_number(row.get(key)) for row in table.rows] for key in chart_spec.y]
    labels = [str(row.get(chart_spec.x, "")) for row in table.rows]
    step = max(1, len(labels) // 24)
    chart.categoryAxis.categoryNames = [label if i % step == 0 else "" for i, label in enumerate(labels)]
    chart.categoryAxis.labels.fontName = FONT
    chart.categoryAxis.labels.fontSize = 6
    chart.valueAxis.labels.fontName = FONT
    chart.valueAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    for index in range(len(chart_spec.y)):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        if isinstance(chart, VerticalBarChart):
            chart.bars[index].fillColor = colour
        else:
            chart.lines[index].strokeColor = colour
    drawing.add(chart)
    return drawing


def table_pdf(table: Table) -> bytes:
    """The PDF's bytes (A4 landscape; the header repeats on every page)."""
    _register_fonts()
    out = io.BytesIO()
    document = SimpleDocTemplate(
        out,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=table.title,
        author="CRM Pulse",
    )
    title_style = ParagraphStyle("title", fontName=FONT_BOLD, fontSize=16, leading=20)
    sub_style = ParagraphStyle("subtitle", fontName=FONT, fontSize=9, leading=12, textColor=colors.HexColor("#444"))
    story: list[Flowable] = [
        Paragraph(_escape(table.title), title_style),
        Paragraph(_escape(f"{table.subtitle} · amounts in {table.currency}"), sub_style),
        Spacer(1, 4 * mm),
    ]
    chart = _chart(table, document.width)
    if chart is not None:
        story += [chart, Spacer(1, 4 * mm)]
    header = [column.label for column in table.columns]
    body = [[format_cell(row.get(column.key), column.kind) for column in table.columns] for row in table.rows]
    if table.totals is not None:
        body.append([format_cell(table.totals.get(column.key), column.kind) for column in table.columns])
    grid = PdfTable([header, *body], repeatRows=1)
    size = 8 if len(table.columns) <= 10 else 6
    style: list[Any] = [
        ("FONTNAME", (0, 0), (-1, -1), FONT),
        ("FONTNAME", (0, 0), (-1, 0), FONT_BOLD),
        ("FONTSIZE", (0, 0), (-1, -1), size),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#667")),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f5f7f9")]),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ]
    for index, column in enumerate(table.columns):
        if column.kind in NUMERIC_KINDS:
            style.append(("ALIGN", (index, 0), (index, -1), "RIGHT"))
    if table.totals is not None:
        style += [("FONTNAME", (0, -1), (-1, -1), FONT_BOLD), ("LINEABOVE", (0, -1), (-1, -1), 0.6, colors.black)]
    grid.setStyle(TableStyle(style))  # commands are heterogeneous tuples the stubs cannot express
    story.append(grid)
    document.build(story)
    return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
