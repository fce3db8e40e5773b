"""The files a run leaves: predictions, metrics, tables, charts, report.md."""
