"""Great Expectations suites for the raw tables, built from the contract in ``raw_tables``.

The same suites gate ``oa load`` (per chunk of the incoming file) and run as Dagster asset checks
on the loaded raw tables. Key uniqueness spans chunks and the rows already loaded, so the loader
checks it in SQL and reports it under the same expectation name.

Great Expectations is imported on first use (``_gx``): it takes seconds, and a file refused for
its bytes or its header is refused before any suite is needed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pandas as pd

from openaudience.core.schema.raw import RawTable

if TYPE_CHECKING:
    import great_expectations as gx

# How a value of each non-text type must look in a CSV file. A timestamp may end in an offset
# (+08:00, +0800, +08) or Z: the loader converts it to the project's time zone (docs/loading.md).
TEXT_PATTERNS = {
    "integer": r"^\s*[-+]?[0-9]+\s*$",
    "double": r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$",
    "date": r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$",
    "timestamp": r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
                 r"([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)?)?\s*$",
}
# What a user is told a value of each type must look like.
TEXT_HINTS = {
    "integer": "a whole number such as 3",
    "double": "a finite number such as 12.5 or 1e3",
    "date": "YYYY-MM-DD",
    "timestamp": "YYYY-MM-DD[ HH:MM[:SS]], optionally ending in an offset (+08:00) or Z",
}

UNIQUE = "expect_column_values_to_be_unique"


@dataclass
class Failures:
    """Failed expectations by row (0-based position in the validated frame)."""

    by_row: dict[int, list[str]] = field(default_factory=dict)
    by_expectation: dict[str, int] = field(default_factory=dict)

    def add(self, row: int, reason: str, expectation: str) -> None:
        self.by_row.setdefault(row, []).append(reason)
        self.by_expectation[expectation] = self.by_expectation.get(expectation, 0) + 1

    def merge(self, other: Failures, offset: int = 0) -> None:
        for row, reasons in other.by_row.items():
            self.by_row.setdefault(row + offset, []).extend(reasons)
        for key, n in other.by_expectation.items():
            self.by_expectation[key] = self.by_expectation.get(key, 0) + n

    def __bool__(self) -> bool:
        return bool(self.by_row)


@lru_cache(maxsize=1)
def _gx() -> ModuleType:
    """The great_expectations module, imported once, quietly and without analytics."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return great_expectations


@lru_cache(maxsize=1)
def _context():
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = _gx().get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _batch_definition():
    ctx = _context()
    try:
        source = ctx.data_sources.get("openaudience_frames")
    except (KeyError, ValueError, LookupError):
        source = ctx.data_sources.add_pandas("openaudience_frames")
    try:
        asset = source.get_asset("frame")
    except (KeyError, ValueError, LookupError):
        asset = source.add_dataframe_asset("frame")
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, ValueError, LookupError):
        return asset.add_batch_definition_whole_dataframe("whole")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def local_now(timezone: str) -> dt.datetime:
    """Now as a wall-clock time in ``timezone`` (``OA_TIMEZONE``), without the zone: raw
    timestamps are naive wall-clock times in that zone, so "not in the future" compares with this,
    not with UTC (which would refuse the last eight hours of events in Asia/Shanghai)."""
    return dt.datetime.now(ZoneInfo(timezone)).replace(tzinfo=None)


def build_suite(table: RawTable, now: dt.datetime | None = None,
                include_unique: bool = True) -> gx.ExpectationSuite:
    """The expectation suite of a raw table over typed values."""
    now = now or utc_now()
    _context()
    suite = _gx().ExpectationSuite(name=f"raw_{table.name}")
    E = _gx().expectations
    for col in table.columns:
        if not col.nullable:
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col.name))
        if col.name == table.key and include_unique:
            suite.add_expectation(E.ExpectColumnValuesToBeUnique(column=col.name))
        if col.allowed:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=col.name,
                                                                 value_set=list(col.allowed)))
        if col.pattern:
            suite.add_expectation(E.ExpectColumnValuesToMatchRegex(
                column=col.name, regex=col.pattern,
                meta={"explains": f"{col.name} must be {col.pattern_hint}"} if col.pattern_hint
                else None))
        if col.min_value is not None:
            suite.add_expectation(E.ExpectColumnValuesToBeBetween(column=col.name,
                                                                   min_value=col.min_value))
        if col.not_in_future:
            limit = now.date() if col.type == "date" else now
            suite.add_expectation(E.ExpectColumnValuesToBeBetween(
                column=col.name, max_value=pd.Timestamp(limit)))
    return suite


def build_text_suite(table: RawTable) -> gx.ExpectationSuite:
    """Checks that text read from a CSV parses as each column's declared type."""
    _context()
    suite = _gx().ExpectationSuite(name=f"raw_{table.name}_types")
    for col in table.columns:
        if col.type in TEXT_PATTERNS:
            suite.add_expectation(_gx().expectations.ExpectColumnValuesToMatchRegex(
                column=col.name, regex=TEXT_PATTERNS[col.type],
                meta={"explains": f"{col.name} must be a {col.type}: {TEXT_HINTS[col.type]}"}))
    return suite


def _money_as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimal (money) columns as float64 for the checks only; the loader stores the exact values.
    GX compares Decimals one value at a time (about 25 times slower: minutes at a million users),
    and its bounds are floats, which a float reads as written (Decimal("0.01") < 0.01 is True)."""
    money = {name: "float64" for name in frame.columns if _is_decimal(frame[name])}
    return frame.astype(money) if money else frame


def _is_decimal(values: pd.Series) -> bool:
    if isinstance(values.dtype, pd.ArrowDtype):
        return str(values.dtype.pyarrow_dtype).startswith("decimal")
    first = values.first_valid_index() if values.dtype == object else None
    return first is not None and isinstance(values[first], Decimal)


def run_suite(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> Failures:
    """Validate ``frame``; failing rows are reported by their index labels in ``frame``."""
    failures = Failures()
    if frame.empty or not suite.expectations:
        return failures
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": _money_as_floats(frame)})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    for res in result.results:
        if res.success:
            continue
        cfg = res.expectation_config
        column = cfg.kwargs.get("column")
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {cfg.type} on {column} could not run: "
                               f"{res.exception_info.get('exception_message')}")
        rows = res.result.get("unexpected_index_list") or []
        values = res.result.get("unexpected_list") or [None] * len(rows)
        detail = _describe(cfg)
        for row, value in zip(rows, values, strict=True):
            failures.add(int(row), f"{column}={show_value(value)}: {cfg.type}{detail}", cfg.type)
    return failures


def _describe(cfg) -> str:
    kw = cfg.kwargs
    if cfg.type == "expect_column_values_to_be_in_set":
        return f" (allowed: {', '.join(map(str, kw['value_set']))})"
    if cfg.type == "expect_column_values_to_match_regex":
        explains = (cfg.meta or {}).get("explains")
        return f" ({explains})" if explains else f" (pattern {kw['regex']})"
    if cfg.type == "expect_column_values_to_be_between":
        parts = []
        if kw.get("min_value") is not None:
            parts.append(f">= {kw['min_value']}")
        if kw.get("max_value") is not None:
            parts.append(f"<= {kw['max_value']} (not in the future)")
        return f" ({' and '.join(parts)})"
    return ""


def show_value(value: object) -> str:
    """A value from a file as a report shows it: quoted, control characters escaped (a terminal
    escape in a file cannot recolour the report), cut at 60 characters."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "NULL"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")
