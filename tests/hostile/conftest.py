"""Collects one row per hostile run and prints the table at the end of the session."""
from __future__ import annotations

ROWS: list[dict] = []


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    from .table import format_table

    terminalreporter.write_line("")
    for line in format_table(ROWS).splitlines():
        terminalreporter.write_line(line)
