"""Reports: a report is data (a spec), planned into KPI and archive reads, run, and rendered.

``table`` holds the one shape every report and drill-down result takes on its way to the screen and
to the exports (CSV, XLSX, PDF), so each exporter is written once for all of them.
"""
