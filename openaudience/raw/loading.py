"""``oa load``: CSV or Parquet into the raw layer, validated, transactional, nothing lost.

A file is read in chunks. Each chunk runs the table's Great Expectations suite; good rows go to a
temporary staging table, bad rows are remembered with their reasons. Key uniqueness is checked
in SQL across the whole file and, when appending, against the rows already loaded. Only then is
the raw table touched, inside the same transaction as the quarantine and the load history:

* default: any bad row rejects the whole file and the raw table is left as it was;
* ``quarantine=True``: good rows load, bad rows land in ``raw.raw_quarantine`` with the reasons.

Files are hostile until read: before the warehouse is touched, the bytes must be what the name
says (Parquet, gzip, UTF-8 text) and the header must be the contract's. Rows then fail one by one,
with the file's value and line: a repeated header, a field over ``FIELD_LIMIT``, a NUL character,
a number that is not finite or past BIGINT. ``load_files`` loads several files in one
transaction. docs/loading.md is the user's reference.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import json
import math
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openaudience.core.errors import UserError, ValidationFailed
from openaudience.core.schema.operational import LOAD_HISTORY_TABLE
from openaudience.core.schema.raw import (
    ARROW_TYPES,
    QUARANTINE_TABLE,
    RAW_SCHEMA,
    RawTable,
    arrow_schema,
    get_table,
    to_decimal,
)
from openaudience.core.warehouse import Warehouse, qident, qualified
from openaudience.raw.validation import (
    UNIQUE,
    Failures,
    build_suite,
    build_text_suite,
    local_now,
    run_suite,
    show_value,
    utc_now,
)

ROW = "_oa_row"
LINE = "_oa_line"
STAGE = "_oa_load_stage"
REPORT_ROWS = 20
SHOW_NAMES = 10  # column names a message lists; the rest are counted
FIELD_LIMIT = 1 << 20  # characters in one field (1 MiB of ASCII); a longer value is a row error
BIGINT = (-(2**63), 2**63 - 1)
# money columns stay Arrow decimals in the frames: no Python object per value on the way in or out
MONEY = pd.ArrowDtype(ARROW_TYPES["decimal"])
READ_BLOCK = 1 << 16  # small enough that a gzip error names a line near where the data broke
# A time followed by an offset or Z: such a timestamp is an instant, converted to OA_TIMEZONE.
OFFSET = r"[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
MAGIC = ((b"PAR1", "parquet"), (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"))
SUFFIXES = (".csv.gz", ".csv", ".txt", ".parquet", ".pq")

Mode = Literal["append", "replace"]
Progress = Callable[[int], None]
FilesProgress = Callable[[str, int], None]  # (table, rows just read)


@dataclass
class LoadResult:
    table: str
    source_file: str
    load_id: str
    mode: str
    kind: str = "csv"
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    failures: Failures = field(default_factory=Failures)
    lines: dict[int, int] = field(default_factory=dict)
    """The line of the file each failing CSV row starts on (rows are 1-based, blank rows skipped)."""


@dataclass(frozen=True)
class _Source:
    """A file whose bytes and header passed, ready to stream."""

    table: RawTable
    path: Path
    kind: str  # csv or parquet
    header_lines: int  # lines the CSV header takes (more than 1 if a quoted name spans lines)


@dataclass
class _Chunk:
    """Part of a file: what it said (for reports and the quarantine), the values in the contract's
    types, the line each CSV row starts on, and what failed while reading (by position)."""

    text: pd.DataFrame
    typed: pd.DataFrame
    lines: np.ndarray | None
    failures: Failures


def load_file(
    warehouse: Warehouse,
    table_name: str,
    path: Path | str,
    mode: Mode = "append",
    quarantine: bool = False,
    progress: Progress | None = None,
    chunk_rows: int = 250_000,
    force: bool = False,
) -> LoadResult:
    """Load one file into ``raw.<table_name>``; raise ``ValidationFailed`` if it is rejected."""
    tick: FilesProgress | None = (lambda _table, n: progress(n)) if progress else None
    return load_files(warehouse, [(table_name, path)], mode=mode, quarantine=quarantine,
                      progress=tick, chunk_rows=chunk_rows, force=force)[0]


def load_files(
    warehouse: Warehouse,
    files: Sequence[tuple[str, Path | str]],
    mode: Mode = "append",
    quarantine: bool = False,
    progress: FilesProgress | None = None,
    chunk_rows: int = 250_000,
    force: bool = False,
) -> list[LoadResult]:
    """Load (table, file) pairs in one transaction: all of them or, if one is refused, none, so
    a folder never ends half replaced. Every file's bytes and header are checked before the
    warehouse is touched. ``force`` lets ``replace`` empty a table with a file of no rows."""
    if mode not in ("append", "replace"):
        raise UserError(f"--mode must be append or replace, not {mode!r}")
    sources = [_open_source(name, Path(path)) for name, path in files]
    with warehouse.connect() as conn:
        warehouse.ensure_schema(conn)
    with warehouse.connect() as conn:
        # every file is staged and checked before any is swapped in: on Spark, which has no
        # transaction to roll back, a refused file then leaves every table as it was
        swaps: list[Callable[[], LoadResult]] = []
        stages: list[str] = []
        try:
            for source in sources:
                swaps.append(_load_source(warehouse, conn, source, mode, quarantine, force, progress,
                                          chunk_rows, stages))
        except BaseException:
            if warehouse.engine == "spark":  # elsewhere the rollback removes them
                for stage in stages:
                    warehouse.execute(conn, f"drop table if exists {stage}")
            raise
        return [swap() for swap in swaps]


def _load_source(warehouse: Warehouse, conn: Any, source: _Source, mode: str, quarantine: bool,
                 force: bool, progress: FilesProgress | None, chunk_rows: int, stages: list[str]
                 ) -> Callable[[], LoadResult]:
    """Stream one file through its checks into a stage table (named in `stages`); returns what
    swaps it into the raw table."""
    table, path = source.table, source.path
    result = LoadResult(table=table.name, source_file=str(path), load_id=uuid.uuid4().hex[:16],
                        mode=mode, kind=source.kind)
    now = utc_now()
    typed_suite = build_suite(table, now=local_now(warehouse.settings.timezone), include_unique=False)
    bad_records: dict[int, dict[str, Any]] = {}
    schema = pa.schema([*arrow_schema(table), pa.field(ROW, pa.int64()), pa.field(LINE, pa.int64())])

    stage, stage_kind = warehouse.scratch_table(f"{STAGE}_{result.load_id}")
    big = warehouse.sql_type("integer")
    warehouse.execute(conn, warehouse.create_table_sql(
        stage, table, extra_columns=f"{qident(ROW)} {big}, {qident(LINE)} {big}", kind=stage_kind))
    stages.append(stage)

    offset = 0
    for chunk in _chunks(source, chunk_rows, warehouse.settings.timezone):
        n = len(chunk.typed)
        failures = chunk.failures
        # rows that failed while reading are reported once, not again by the value checks
        failures.merge(run_suite(chunk.typed.drop(index=list(failures.by_row)), typed_suite))
        bad_positions = sorted(failures.by_row)
        for pos in bad_positions:
            if quarantine or len(bad_records) < REPORT_ROWS:
                bad_records[offset + pos + 1] = chunk.text.iloc[pos].to_dict()
            if chunk.lines is not None:
                result.lines[offset + pos + 1] = int(chunk.lines[pos])
        result.failures.merge(failures, offset=offset + 1)  # report rows 1-based
        lines = chunk.lines if chunk.lines is not None else np.zeros(n, dtype=np.int64)
        good = chunk.typed.assign(**{ROW: range(offset + 1, offset + n + 1), LINE: lines})
        good = good.drop(index=bad_positions)
        arrow = pa.Table.from_pandas(good[schema.names], preserve_index=False).cast(schema)
        warehouse.insert_arrow(conn, stage, arrow)
        offset += n
        result.rows_read = offset
        if progress:
            progress(table.name, n)

    _check_keys(warehouse, conn, stage, table, mode, result, bad_records, quarantine)
    if result.failures and not quarantine:
        raise ValidationFailed(
            f"{path}: {len(result.failures.by_row)} of {result.rows_read} rows break the "
            f"contract of {RAW_SCHEMA}.{table.name}; nothing was loaded",
            report=format_report(result),
        )

    staged = int(warehouse.execute(conn, f"select count(*) from {stage}")[0][0])
    if mode == "replace":
        _refuse_emptying(warehouse, conn, result, staged, force)
    return lambda: _swap(warehouse, conn, source, result, stage, staged, bad_records, now)


def _swap(warehouse: Warehouse, conn: Any, source: _Source, result: LoadResult, stage: str,
          staged: int, bad_records: dict[int, dict[str, Any]], now: dt.datetime) -> LoadResult:
    """The checked stage into the raw table (replacing it with --mode replace), then the history."""
    table, path, mode = source.table, source.path, result.mode
    target = qualified(RAW_SCHEMA, table.name)
    cols = ", ".join(qident(c) for c in table.column_names)
    if mode == "replace" and warehouse.engine == "spark":  # one job replaces the table's files
        warehouse.execute(conn, f"insert overwrite table {target} select {cols} from {stage}")
    else:
        if mode == "replace":
            warehouse.execute(conn, f"delete from {target}")
        warehouse.execute(conn, f"insert into {target} ({cols}) select {cols} from {stage}")
    result.rows_loaded = staged
    if result.failures:  # only with --quarantine: without it, a failure refused the file
        _write_quarantine(warehouse, conn, table, result, bad_records, now)
    result.rows_quarantined = len(result.failures.by_row)
    warehouse.execute(conn, f"drop table {stage}")
    history = pa.table({
        "load_id": [result.load_id], "table_name": [table.name],
        "source_file": [str(path)], "mode": [mode],
        "rows_loaded": pa.array([result.rows_loaded], pa.int64()),
        "rows_quarantined": pa.array([result.rows_quarantined], pa.int64()),
        "loaded_at": pa.array([now], pa.timestamp("us")),
    })
    warehouse.insert_arrow(conn, qualified(RAW_SCHEMA, LOAD_HISTORY_TABLE), history)
    return result


def _refuse_emptying(warehouse: Warehouse, conn: Any, result: LoadResult, staged: int,
                     force: bool) -> None:
    """``--mode replace`` with nothing to load would empty the table: an export that came out
    empty must not wipe the data, so that takes ``--force``."""
    if staged or force:
        return
    existing = warehouse.row_count(RAW_SCHEMA, result.table, conn)
    if not existing:
        return
    why = (f"all {result.rows_read:,} rows were refused" if result.rows_read
           else "the file has no rows")
    message = (f"{result.source_file}: {why}, so --mode replace would empty {RAW_SCHEMA}."
               f"{result.table} ({existing:,} rows now); nothing was changed. Check the file, or "
               "add --force to empty the table on purpose")
    raise ValidationFailed(message, report=format_report(result) if result.failures else "")


def _open_source(table_name: str, path: Path) -> _Source:
    """The table and the file, checked before any row is read: a wrong or misnamed file is one
    message that says how to fix it, not a parser's error halfway through."""
    try:
        table = get_table(table_name)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    kind = _file_kind(path)
    _check_bytes(path)
    columns, header_lines = _read_header(path, kind)
    _check_columns(path, table, columns)
    return _Source(table=table, path=path, kind=kind, header_lines=header_lines)


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise UserError(f"{path}: unknown file type; oa load reads .csv, .csv.gz or .parquet files")


def _sniff(path: Path) -> str:
    """What the first bytes say the file is: parquet, gzip, zip, text, or empty."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        return "empty"
    return next((what for magic, what in MAGIC if head.startswith(magic)), "text")


def _check_bytes(path: Path) -> None:
    """The bytes are what the name says; a CSV is UTF-8 and, if gzipped, whole."""
    name = path.name.lower()
    expected = ("parquet" if name.endswith((".parquet", ".pq"))
                else "gzip" if name.endswith(".gz") else "text")
    found = _sniff(path)
    if found == "empty":
        raise UserError(f"{path}: the file is empty (0 bytes); export it again (a CSV file starts "
                        "with its header line)")
    if found != expected:
        raise UserError(f"{path}: {_misnamed(path, found, expected)}")
    if expected != "parquet":
        _check_utf8(path, gzipped=expected == "gzip")


def _misnamed(path: Path, found: str, expected: str) -> str:
    """What to do with a file whose bytes are not what its name says."""
    base = _base_name(path)
    was = {"text": "CSV", "gzip": "a gzipped CSV (.csv.gz)", "parquet": "Parquet"}[expected]
    if found == "parquet":
        return f"the file looks like Parquet, not {was}; rename it to {base}.parquet"
    if found == "gzip":
        return (f"the file looks gzip-compressed, not {was}; if it is a compressed CSV, rename it "
                f"to {base}.csv.gz")
    if found == "zip":
        return (f"the file looks like a ZIP archive (an Excel workbook?), not {was}; save it as "
                "CSV UTF-8 or Parquet")
    if expected == "gzip":
        return f"the file is not gzip-compressed; if it is a plain CSV, rename it to {base}.csv"
    return f"the file looks like text (CSV?), not Parquet; if it is a CSV file, rename it to {base}.csv"


def _base_name(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _check_utf8(path: Path, gzipped: bool) -> None:
    """Decode the whole file once before pandas reads it, so a byte that is not UTF-8 is reported
    with its line (pandas names only an offset in its buffer), and a truncated or corrupt gzip
    stream is found before any row is parsed."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as fh:
            while block := fh.read(READ_BLOCK):
                pending = decoder.getstate()[0]  # an unfinished character from the last block
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    data = pending + block
                    raise _not_utf8(path, line + data.count(b"\n", 0, exc.start), data[exc.start]) from None
                line += block.count(b"\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{path}: the gzip data is truncated or corrupt after line {line} ({exc}); "
                        "copy the file again if the transfer was cut short, or compress it "
                        "again") from None
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, line, exc.object[exc.start]) from None


def _not_utf8(path: Path, line: int, byte: int) -> UserError:
    return UserError(f"{path}: line {line} is not UTF-8 (byte 0x{byte:02x}; the file may be GBK or "
                     "Latin-1); save the file as UTF-8 (in Excel: Save As, CSV UTF-8)")


def _open_text(path: Path) -> IO[str]:
    """The CSV as text; a byte-order mark (Excel's CSV UTF-8 writes one) is not part of the header."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _read_header(path: Path, kind: str) -> tuple[list[str], int]:
    """The column names as the file spells them (pandas would rename a repeated one), and the
    lines the header takes."""
    if kind == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names), 0
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{path}: cannot be read as Parquet ({exc}); write the file again") from None
    try:
        with _open_text(path) as fh:
            names = next(csv.reader(fh), [])
    except csv.Error as exc:
        raise UserError(f"{path}: line 1, the header, is not well-formed CSV ({exc})") from None
    if not names or names == [""]:
        raise UserError(f"{path}: line 1 is empty; a CSV file starts with its header line (the "
                        "column names, comma-separated)")
    return names, 1 + sum(name.count("\n") for name in names)


def _check_columns(path: Path, table: RawTable, columns: list[str]) -> None:
    expected = table.column_names
    twice = [c for c, n in Counter(columns).items() if n > 1]
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if not (missing or extra or twice):
        return
    if len(columns) == 1:
        separator = next((s for s in (";", "\t", "|") if s in columns[0]), None)
        if separator:
            raise ValidationFailed(
                f"{path}: the header is one column, separated by {separator!r}; oa load reads "
                "comma-separated files: save the file as CSV with commas")
    parts = []
    if twice:
        parts.append(f"column(s) named more than once: {_names(twice)}")
    if missing:
        parts.append(f"missing column(s): {_names(missing)}")
    if extra:
        parts.append(f"unknown column(s): {_names(extra)}")
    raise ValidationFailed(
        f"{path}: {'; '.join(parts)}. The header of {RAW_SCHEMA}.{table.name} must be: "
        f"{','.join(expected)}")


def _names(names: list[str]) -> str:
    """The first ``SHOW_NAMES`` names, the rest counted: a file with 1,000 stray columns gets a
    message, not a screenful. Odd names (spaces, blanks) are quoted so they can be seen."""
    shown = [n if n.isidentifier() else repr(n if len(n) <= 60 else n[:57] + "...")
             for n in names[:SHOW_NAMES]]
    more = len(names) - SHOW_NAMES
    return ", ".join(shown) + (f" ... and {more:,} more" if more > 0 else "")


def _chunks(source: _Source, chunk_rows: int, timezone: str) -> Iterator[_Chunk]:
    if source.kind == "csv":
        yield from _csv_chunks(source, chunk_rows, timezone)
    else:
        yield from _parquet_chunks(source, chunk_rows, timezone)


def _csv_chunks(source: _Source, chunk_rows: int, timezone: str) -> Iterator[_Chunk]:
    """The CSV's rows, a chunk at a time, checked and typed. Rows whose fields are all empty (blank
    lines, the ",,,," rows spreadsheets leave) are skipped; every other row keeps the line it
    starts on, counting the line breaks inside quoted fields."""
    table = source.table
    text_suite = build_text_suite(table)
    line = source.header_lines + 1
    for frame in _frames(source, chunk_rows):
        frame = frame[table.column_names]
        span = 1 + sum(frame[c].str.count("\n").fillna(0).astype("int64") for c in table.column_names)
        starts = (line + span.cumsum() - span).to_numpy(dtype=np.int64)
        line += int(span.sum())
        kept = ~(frame == "").all(axis=1).to_numpy(dtype=bool)
        frame = frame[kept].replace({"": None}).reset_index(drop=True)
        yield _csv_chunk(frame, starts[kept], table, text_suite, timezone)


def _frames(source: _Source, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """pandas' chunks of the CSV as text; a file it cannot parse is one message."""
    try:
        yield from pd.read_csv(source.path, dtype=str, keep_default_na=False, skip_blank_lines=False,
                               chunksize=chunk_rows, usecols=source.table.column_names)
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserError(f"{source.path}: not well-formed CSV ({exc}); a quote opened and never "
                        "closed, or a row with more fields than the header?") from None


def _csv_chunk(frame: pd.DataFrame, lines: np.ndarray, table: RawTable, text_suite: Any,
               timezone: str) -> _Chunk:
    failures = _repeated_headers(frame, table)
    failures.merge(_field_failures(frame, table.column_names))
    failures.merge(run_suite(frame.drop(index=list(failures.by_row)), text_suite))
    typed, parse_failures = _coerce_text(frame, table, skip=set(failures.by_row), timezone=timezone)
    failures.merge(parse_failures)
    return _Chunk(text=frame, typed=typed, lines=lines, failures=failures)


def _repeated_headers(frame: pd.DataFrame, table: RawTable) -> Failures:
    """A row made of the column names is the header again: exports concatenated with `cat`.
    Said once, instead of as one broken value per column."""
    names = set(table.column_names)
    first, *rest = table.column_names
    again = frame[first].str.strip().isin(names).to_numpy(dtype=bool, copy=True)
    if again.any():  # rarely: only then look at the other columns
        for name in rest:
            again &= frame[name].str.strip().isin(names).to_numpy(dtype=bool)
    failures = Failures()
    for pos in np.flatnonzero(again):
        failures.add(int(pos), "this line repeats the header (were files concatenated?); delete it",
                     "no_repeated_header")
    return failures


def _field_failures(frame: pd.DataFrame, columns: list[str]) -> Failures:
    """Text no raw column takes: longer than ``FIELD_LIMIT``, or holding a NUL character
    (PostgreSQL cannot store one; refused on DuckDB too, so both engines agree)."""
    failures = Failures()
    for name in columns:
        values = frame[name]
        lengths = values.str.len().fillna(0).to_numpy(dtype=np.int64)
        for pos in np.flatnonzero(lengths > FIELD_LIMIT):
            failures.add(int(pos), f"{name}: a value of {lengths[pos]:,} characters, over the limit "
                                   f"of {FIELD_LIMIT:,} per field", "field_size_limit")
        nul = values.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        for pos in np.flatnonzero(nul & (lengths <= FIELD_LIMIT)):
            failures.add(int(pos), f"{name}={show_value(values.iloc[pos])}: contains a NUL character "
                                   "(\\x00), which the warehouse cannot store; remove it",
                         "no_nul_character")
    return failures


def _coerce_text(chunk: pd.DataFrame, table: RawTable, skip: set[int],
                 timezone: str = "UTC") -> tuple[pd.DataFrame, Failures]:
    """Turn CSV text into typed columns. A value that looks right but is not (2025-02-30) fails,
    and so does one that parses but cannot be stored as it is (1e999, an integer past BIGINT);
    each failure shows the file's value."""
    typed = pd.DataFrame(index=chunk.index)
    failures = Failures()
    for col in table.columns:
        raw = chunk[col.name]
        if col.type == "text":
            typed[col.name] = raw
            continue
        stripped = raw.str.strip()
        unstorable = pd.Series(False, index=chunk.index)  # parses, but not into the column's type
        if col.type == "integer":
            values, unstorable = _integers(stripped)
        elif col.type == "double":
            values = pd.to_numeric(stripped, errors="coerce").astype("float64")
            unstorable = pd.Series(np.isinf(values.to_numpy()), index=chunk.index)
            values = values.mask(unstorable)
        elif col.type == "decimal":
            values = _decimals(stripped)
        elif col.type == "date":
            values = pd.to_datetime(stripped, format="%Y-%m-%d", errors="coerce")
        else:
            values = _timestamps(stripped, timezone)
        broken = raw.notna() & values.isna()
        for pos in broken[broken].index:
            if pos not in skip:
                failures.add(int(pos), *_parse_failure(col.name, col.type, raw[pos], bool(unstorable[pos])))
        typed[col.name] = values
    return typed, failures


def _parse_failure(name: str, type_: str, value: str, unstorable: bool) -> tuple[str, str]:
    """(reason, expectation) for a value of the file that did not become a value of its column."""
    shown = f"{name}={show_value(value)}"
    if type_ == "decimal":
        return f"{shown}: {_decimal_problem(value)}", "valid_decimal"
    if not unstorable:
        return f"{shown}: not a valid {type_}", f"valid_{type_}"
    if type_ == "integer":
        return f"{shown}: outside the BIGINT range ({BIGINT[0]:,} to {BIGINT[1]:,})", "bigint_range"
    return f"{shown}: not a finite number", "finite_number"


def _integers(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Exact 64-bit integers from text (through a float they would round past 2**53), and which
    values are whole numbers too big for BIGINT."""
    fast = pd.to_numeric(text, errors="coerce")
    if fast.dtype == np.int64:  # every value a whole number that fits: the usual case
        return fast.astype("Int64"), pd.Series(False, index=text.index)
    parsed = [_whole_number(v) for v in text.tolist()]
    too_big = [v is not None and not BIGINT[0] <= v <= BIGINT[1] for v in parsed]
    kept = [None if big else v for v, big in zip(parsed, too_big, strict=True)]
    return (pd.Series(pd.array(kept, dtype="Int64"), index=text.index),
            pd.Series(too_big, index=text.index, dtype=bool))


def _whole_number(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(text)
    except ValueError:  # not a number, or more digits than Python converts: too big either way
        digits = text.strip().lstrip("+-")
        return BIGINT[1] + 1 if digits.isascii() and digits.isdigit() else None


def _decimals(text: pd.Series) -> pd.Series:
    """Exact money from text (never through a float: "0.1" stays 0.10); missing where a value is
    not a number, has more decimals than the scale or is too large."""
    exact = pa.array([_decimal_or_none(v) for v in text.tolist()], MONEY.pyarrow_dtype)
    return pd.Series(pd.arrays.ArrowExtensionArray(exact), index=text.index)


def _decimal_or_none(value: object) -> Decimal | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        return to_decimal(value)
    except ValueError:
        return None


def _decimal_problem(value: object) -> str:
    try:
        to_decimal(value)
    except ValueError as exc:
        return f"not a valid decimal: {exc}"
    return "not a valid decimal"


def _timestamps(text: pd.Series, timezone: str) -> pd.Series:
    """Naive timestamps are wall-clock times in ``timezone`` already; one with an offset or Z is an
    instant, converted to that wall-clock time, so a raw column never mixes zones. Sub-microsecond
    digits are dropped (both engines keep microseconds)."""
    aware = text.str.contains(OFFSET, regex=True, na=False).to_numpy(dtype=bool)
    values = pd.to_datetime(text.where(~aware), format="ISO8601", errors="coerce")
    if aware.any():
        instants = pd.to_datetime(text.where(aware), format="ISO8601", utc=True, errors="coerce")
        local = instants.dt.tz_convert(timezone).dt.tz_localize(None)
        values = values.where(~aware, local)
    return values.dt.floor("us")


def _parquet_chunks(source: _Source, chunk_rows: int, timezone: str) -> Iterator[_Chunk]:
    batches = pq.ParquetFile(source.path).iter_batches(batch_size=chunk_rows,
                                                       columns=source.table.column_names)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{source.path}: the Parquet data is corrupt ({exc}); write the file "
                            "again") from None
        yield _parquet_chunk(source, batch, timezone)


def _parquet_chunk(source: _Source, batch: pa.RecordBatch, timezone: str) -> _Chunk:
    """A batch in the contract's types. NaN and infinity are found on the Arrow data (pandas would
    read NaN as a missing value); timestamps with a zone are converted to ``timezone``."""
    table = source.table
    schema = arrow_schema(table)
    arrays, failures = [], Failures()
    for fld in schema:
        col = batch.column(batch.schema.get_field_index(fld.name))
        if pa.types.is_floating(col.type):
            failures.merge(_nonfinite(fld.name, col))
        if pa.types.is_decimal(fld.type):
            col = _decimal_column(fld, col, failures)
        arrays.append(_to_contract_type(source, fld, col, timezone))
    frame = pa.Table.from_arrays(arrays, schema=pa.schema(
        [pa.field(f.name, f.type) for f in schema])).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype(), MONEY.pyarrow_dtype: MONEY}.get, timestamp_as_object=False)
    for col in table.columns:
        if col.type == "date":
            frame[col.name] = pd.to_datetime(frame[col.name])
    failures.merge(_field_failures(frame, [c.name for c in table.columns if c.type == "text"]))
    return _Chunk(text=frame, typed=frame, lines=None, failures=failures)


def _decimal_column(fld: pa.Field, col: pa.Array, failures: Failures) -> pa.Array:
    """A Parquet column for a money column, in its decimal type. A decimal that fits casts as it
    is; doubles (rounded to the scale), integers, text and wider decimals go value by value
    (raw_tables.to_decimal), and a value that does not fit fails its row, not the file. NaN and
    infinity were reported by ``_nonfinite``; other types are left to ``_to_contract_type``."""
    kind = col.type
    if pa.types.is_decimal(kind) and (kind.scale <= fld.type.scale and kind.precision - kind.scale
                                      <= fld.type.precision - fld.type.scale):
        return col.cast(fld.type)
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)
            or pa.types.is_string(kind)):
        return col
    values: list[Decimal | None] = []
    for pos, value in enumerate(col.to_pylist()):
        exact = _decimal_or_none(value)
        reported = value is None or (isinstance(value, float) and not math.isfinite(value))
        if exact is None and not reported:
            failures.add(pos, f"{fld.name}={show_value(value)}: {_decimal_problem(value)}", "valid_decimal")
        values.append(exact)
    return pa.array(values, fld.type)


def _nonfinite(name: str, values: pa.Array) -> Failures:
    failures = Failures()
    mask = pc.fill_null(pc.or_(pc.is_nan(values), pc.is_inf(values)), False)
    for pos in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
        failures.add(int(pos), f"{name}={values[int(pos)].as_py()}: not a finite number",
                     "finite_number")
    return failures


def _to_contract_type(source: _Source, fld: pa.Field, col: pa.Array, timezone: str) -> pa.Array:
    if pa.types.is_timestamp(col.type) and col.type.tz:
        col = pc.local_timestamp(col.cast(pa.timestamp(col.type.unit, tz=timezone)))
    if col.type == fld.type:
        return col
    # timestamp to timestamp drops sub-microsecond digits; every other cast must be exact
    exact = not (pa.types.is_timestamp(col.type) and pa.types.is_timestamp(fld.type))
    try:
        return col.cast(fld.type, safe=exact)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValidationFailed(
            f"{source.path}: column {fld.name} has type {col.type}, which does not convert to "
            f"{fld.type} as {RAW_SCHEMA}.{source.table.name} requires ({exc}); fix the file's "
            "schema or write it as CSV") from None


def _check_keys(warehouse: Warehouse, conn: Any, stage: str, table: RawTable, mode: str,
                result: LoadResult, bad_records: dict[int, dict[str, Any]],
                quarantine: bool) -> None:
    """Keys are compared the way staging reads them: trimmed (every staging model selects
    ``trim(<key>) as <key>``), by the engine's own ``trim()``, so the loader and staging agree on
    each engine. ' M1' and 'M1' are then one key, and a key of spaces only is blank. A key must be
    unique within the file and, when appending, not already loaded; all holders of a duplicated
    key are rejected, since nobody can tell which of them is right. Raw keeps the key as written."""
    key, row, line = qident(table.key), qident(ROW), qident(LINE)
    trimmed = f"trim(s.{key})"
    found: list[tuple[Any, Any, Any, str, str]] = [
        (r, ln, value, "blank once spaces are trimmed (staging reads keys trimmed)", "key_not_blank")
        for r, ln, value in warehouse.execute(
            conn, f"select s.{row}, s.{line}, s.{key} from {stage} s where {trimmed} = ''")]
    dupes = warehouse.execute(
        conn, f"select s.{row}, s.{line}, s.{key}, {trimmed} from {stage} s join (select trim({key}) "
              f"as k from {stage} where trim({key}) <> '' group by trim({key}) having count(*) > 1) d "
              f"on d.k = {trimmed}")
    found += [(r, ln, value, f"{UNIQUE} (appears more than once in the file{_trim_note(value, t)})",
               UNIQUE) for r, ln, value, t in dupes]
    if mode == "append":
        clashes = warehouse.execute(
            conn, f"select s.{row}, s.{line}, s.{key}, {trimmed} from {stage} s where {trimmed} <> '' "
                  f"and {trimmed} in (select trim({key}) from {qualified(RAW_SCHEMA, table.name)})")
        found += [(r, ln, value, f"{UNIQUE} (already loaded in {RAW_SCHEMA}.{table.name}"
                   f"{_trim_note(value, t)})", UNIQUE) for r, ln, value, t in clashes]
    for r, ln, value, why, expectation in found:
        result.failures.add(int(r), f"{table.key}={show_value(value)}: {why}", expectation)
        if ln:
            result.lines[int(r)] = int(ln)
    rows = [int(f[0]) for f in found]
    if not rows:
        return
    wanted = sorted(set(rows))  # rows whose records the report or the quarantine needs
    if not quarantine:
        wanted = wanted[:REPORT_ROWS]
    cols = ", ".join(qident(c) for c in table.column_names)
    for start in range(0, len(wanted), 1000):
        part = wanted[start:start + 1000]
        placeholders = ", ".join(["%s"] * len(part))
        records = warehouse.execute(
            conn, f"select {row}, {cols} from {stage} where {row} in ({placeholders})", part)
        for rec in records:
            bad_records[int(rec[0])] = dict(zip(table.column_names, rec[1:], strict=True))
    warehouse.delete_rows(conn, stage, ROW, sorted(set(rows)))


def _trim_note(value: str, trimmed: str) -> str:
    if value == trimmed:
        return ""
    return f", as {show_value(trimmed)} once spaces are trimmed as staging reads keys"


def _write_quarantine(warehouse: Warehouse, conn: Any, table: RawTable, result: LoadResult,
                      bad_records: dict[int, dict[str, Any]], now: dt.datetime) -> None:
    rows = sorted(result.failures.by_row)
    quarantine = pa.table({
        "load_id": [result.load_id] * len(rows),
        "table_name": [table.name] * len(rows),
        "source_file": [result.source_file] * len(rows),
        "row_number": pa.array(rows, pa.int64()),
        "record": [json.dumps(_jsonable(bad_records.get(r, {})), ensure_ascii=False) for r in rows],
        "reasons": ["; ".join(result.failures.by_row[r]) for r in rows],
        "quarantined_at": pa.array([now] * len(rows), pa.timestamp("us")),
    })
    warehouse.insert_arrow(conn, qualified(RAW_SCHEMA, QUARANTINE_TABLE), quarantine)


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """A quarantined record as JSON values: infinity as text (JSON has none; NaN and a missing
    value are one in a pandas frame, so null), a value over ``FIELD_LIMIT`` cut short, so the
    quarantine never holds what the limit refused."""
    out = {}
    for k, v in record.items():
        if hasattr(v, "item") and not isinstance(v, (pd.Timestamp, dt.date, dt.datetime)):
            v = v.item()
        if isinstance(v, float) and math.isinf(v):
            out[k] = str(v)
        elif v is None or (not isinstance(v, str) and pd.isna(v)):
            out[k] = None
        elif isinstance(v, (pd.Timestamp, dt.date, dt.datetime)):
            out[k] = v.isoformat()
        elif isinstance(v, Decimal):
            out[k] = str(v)  # money as written, exact: "199.90", never 199.89999999999998
        elif isinstance(v, str) and len(v) > FIELD_LIMIT:
            out[k] = v[:1000] + f"... ({len(v):,} characters, cut)"
        else:
            out[k] = v
    return out


def format_report(result: LoadResult, kind: str | None = None) -> str:
    """Human-readable: the failed expectations with counts, then the first failing rows with the
    line each starts on. It holds the file's values: print it without markup."""
    kind = kind or result.kind
    lines = ["Failed expectations:"]
    for name, n in sorted(result.failures.by_expectation.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name}: {n} value(s)")
    lines.append("First failing rows:")
    for row in sorted(result.failures.by_row)[:REPORT_ROWS]:
        line = result.lines.get(row)
        where = f"row {row} (line {line})" if kind == "csv" and line else f"row {row}"
        lines.append(f"  {where}: " + "; ".join(result.failures.by_row[row]))
    hidden = len(result.failures.by_row) - REPORT_ROWS
    if hidden > 0:
        lines.append(f"  ... and {hidden} more row(s)")
    lines.append("Fix these rows, or run again with --quarantine to load the good rows and keep "
                 f"the bad ones in {RAW_SCHEMA}.{QUARANTINE_TABLE}.")
    return "\n".join(lines)
