"""Great Expectations suites for the raw tables, built from the contract in ``raw_tables``.

The same suites gate ``oa load`` (per chunk of the incoming file) and run as Dagster asset checks
on the loaded raw tables. Key uniqueness spans chunks and the rows already loaded, so the loader
checks it in SQL and reports it under the same expectation name.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from orchestration.raw_tables import RawTable  # noqa: E402

logging.getLogger("great_expectations").setLevel(logging.ERROR)

# How a value of each non-text type must look in a CSV file.
TEXT_PATTERNS = {
    "integer": r"^\s*[-+]?[0-9]+\s*$",
    "double": r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$",
    "date": r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$",
    "timestamp": r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?\s*$",
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
def _context():
    ctx = gx.get_context(mode="ephemeral")
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


def build_suite(table: RawTable, now: dt.datetime | None = None,
                include_unique: bool = True) -> gx.ExpectationSuite:
    """The expectation suite of a raw table over typed values."""
    now = now or utc_now()
    _context()
    suite = gx.ExpectationSuite(name=f"raw_{table.name}")
    E = gx.expectations
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
    suite = gx.ExpectationSuite(name=f"raw_{table.name}_types")
    for col in table.columns:
        if col.type in TEXT_PATTERNS:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToMatchRegex(
                column=col.name, regex=TEXT_PATTERNS[col.type],
                meta={"explains": f"{col.name} must be a {col.type}"}))
    return suite


def run_suite(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> Failures:
    """Validate ``frame``; failing rows are reported by their index labels in ``frame``."""
    failures = Failures()
    if frame.empty or not suite.expectations:
        return failures
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
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
            failures.add(int(row), f"{column}={_show(value)}: {cfg.type}{detail}", cfg.type)
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


def _show(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "NULL"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")
