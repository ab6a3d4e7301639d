"""CSV cells that a spreadsheet cannot run: neutralise formula injection.

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``, ``+``, ``-``, ``@``
(and a tab or carriage return before one of them) as a formula, so a category or file name such
as ``=HYPERLINK("http://...")`` taken from someone else's annotation file would run when a
colleague opens ``instances.csv``. Following OWASP's advice, such *text* cells are prefixed with
a single quote, which spreadsheets show as text; numbers (``-3.5``) are left alone, so the
tables stay numeric for pandas and for plotting.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["csv_safe", "csv_safe_cell"]

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(_TRIGGERS):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells (and column names) are safe to open in a spreadsheet."""
    out = df.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(csv_safe_cell)
    out.columns = [csv_safe_cell(c) for c in out.columns]
    return out
