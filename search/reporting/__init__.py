"""The HTML report a run leaves beside its export."""

from search.reporting.html import warnings_for, write_report

__all__ = [
    "warnings_for",
    "write_report",
]
