"""CSV cells that a spreadsheet will not run: the OWASP advice against CSV (formula) injection.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (``=HYPERLINK(...)``, ``-2+3+cmd|' /C calc'!A0``),
so an id or a tag value that a customer typed could run in the marketer's spreadsheet. Such a cell
gets a leading single quote, which spreadsheets show as text and do not evaluate.

Only text is changed: numbers stay numbers, and text that is a plain number (``-3.5``,
``+8613800138000``) is left alone too, because a spreadsheet reads it as that number and never as
a formula. Exports for machines opt out (``spreadsheet_safe: false`` on a file destination,
``oa audience export --raw``), since a consumer that is no spreadsheet would keep the quote.

This module imports nothing of ours, so connectors and orchestration can both use it.
"""

from __future__ import annotations

import re
from typing import TypeVar

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
T = TypeVar("T")


def neutralise(value: T) -> T | str:
    """`value` as a spreadsheet-safe cell: text a spreadsheet would evaluate gets a leading `'`;
    anything else (numbers, None, safe text) comes back unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralise_all(values: list) -> list:
    """Every cell of a column through `neutralise`."""
    return [neutralise(v) for v in values]
