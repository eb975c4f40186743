"""``oa load``: CSV or Parquet into the raw layer, validated, transactional, nothing lost.

A file is read in chunks. Each chunk runs the table's Great Expectations suite; good rows go to a
temporary staging table, bad rows are remembered with their reasons. Key uniqueness is checked
in SQL across the whole file and, when appending, against the rows already loaded. Only then is
the raw table touched, inside the same transaction as the quarantine and the load history:

* default: any bad row rejects the whole file and the raw table is left as it was;
* ``quarantine=True``: good rows load, bad rows land in ``raw.raw_quarantine`` with the reasons.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.errors import UserError, ValidationFailed
from orchestration.raw_tables import (
    QUARANTINE_TABLE,
    RAW_SCHEMA,
    RawTable,
    arrow_schema,
    get_table,
)
from orchestration.validation import (
    UNIQUE,
    Failures,
    build_suite,
    build_text_suite,
    run_suite,
    utc_now,
)
from orchestration.warehouse import LOAD_HISTORY_TABLE, Warehouse, qident, qualified

ROW = "_oa_row"
STAGE = "_oa_load_stage"
REPORT_ROWS = 20

Mode = Literal["append", "replace"]
Progress = Callable[[int], None]


@dataclass
class LoadResult:
    table: str
    source_file: str
    load_id: str
    mode: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    failures: Failures = field(default_factory=Failures)


def load_file(
    warehouse: Warehouse,
    table_name: str,
    path: Path | str,
    mode: Mode = "append",
    quarantine: bool = False,
    progress: Progress | None = None,
    chunk_rows: int = 250_000,
) -> LoadResult:
    """Load one file into ``raw.<table_name>``; raise ``ValidationFailed`` if it is rejected."""
    try:
        table = get_table(table_name)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if mode not in ("append", "replace"):
        raise UserError(f"--mode must be append or replace, not {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    kind = _file_kind(path)
    columns = _read_header(path, kind)
    _check_columns(path, table, columns)

    result = LoadResult(table=table.name, source_file=str(path), load_id=uuid.uuid4().hex[:16],
                        mode=mode)
    now = utc_now()
    typed_suite = build_suite(table, now=now, include_unique=False)
    text_suite = build_text_suite(table)
    bad_records: dict[int, dict[str, Any]] = {}
    schema = arrow_schema(table)

    with warehouse.connect() as conn:
        warehouse.ensure_raw_layer(conn)
    with warehouse.connect() as conn:
        stage, stage_kind = warehouse.scratch_table(f"{STAGE}_{result.load_id}")
        warehouse.execute(conn, warehouse.create_table_sql(
            stage, table, extra_columns=f"{qident(ROW)} {warehouse.sql_type('integer')}",
            kind=stage_kind))

        offset = 0
        for chunk in _chunks(path, kind, table, chunk_rows):
            n = len(chunk)
            if kind == "csv":
                failures = run_suite(chunk, text_suite)
                typed, parse_failures = _coerce_text(chunk, table, skip=set(failures.by_row))
                failures.merge(parse_failures)
            else:
                typed, failures = chunk, Failures()
            # rows that failed to parse are reported once, not again by the value checks
            failures.merge(run_suite(typed.drop(index=list(failures.by_row)), typed_suite))
            bad_positions = sorted(failures.by_row)
            for pos in bad_positions:
                if quarantine or len(bad_records) < REPORT_ROWS:
                    bad_records[offset + pos + 1] = chunk.iloc[pos].to_dict()
            result.failures.merge(failures, offset=offset + 1)  # report rows 1-based
            good = typed.assign(**{ROW: range(offset + 1, offset + n + 1)}).drop(index=bad_positions)
            arrow = pa.Table.from_pandas(good[[*table.column_names, ROW]], preserve_index=False)
            arrow = arrow.cast(pa.schema([*schema, pa.field(ROW, pa.int64())]))
            warehouse.insert_arrow(conn, stage, arrow)
            offset += n
            result.rows_read = offset
            if progress:
                progress(n)

        _check_keys(warehouse, conn, stage, table, mode, result, bad_records, quarantine)
        if result.failures and not quarantine:
            raise ValidationFailed(
                f"{path}: {len(result.failures.by_row)} of {result.rows_read} rows break the "
                f"contract of {RAW_SCHEMA}.{table.name}; nothing was loaded",
                report=format_report(result, kind),
            )

        target = qualified(RAW_SCHEMA, table.name)
        if mode == "replace":
            warehouse.execute(conn, f"delete from {target}")
        cols = ", ".join(qident(c) for c in table.column_names)
        warehouse.execute(conn, f"insert into {target} ({cols}) select {cols} from {stage}")
        result.rows_loaded = int(warehouse.execute(conn, f"select count(*) from {stage}")[0][0])
        if quarantine and result.failures:
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


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise UserError(f"{path}: unknown file type; oa load reads .csv, .csv.gz or .parquet files")


def _read_header(path: Path, kind: str) -> list[str]:
    try:
        if kind == "csv":
            return list(pd.read_csv(path, nrows=0, dtype=str).columns)
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowInvalid, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: cannot be read as {kind}: {exc}") from None


def _check_columns(path: Path, table: RawTable, columns: list[str]) -> None:
    expected = table.column_names
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s): {', '.join(extra)}")
        raise ValidationFailed(
            f"{path}: {'; '.join(parts)}. The header of {RAW_SCHEMA}.{table.name} must be: "
            f"{','.join(expected)}")


def _chunks(path: Path, kind: str, table: RawTable, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if kind == "csv":
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                             usecols=table.column_names)
        try:
            for chunk in reader:
                chunk = chunk[table.column_names].replace({"": None})
                yield chunk.reset_index(drop=True)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not a well-formed CSV file: {exc}") from None
        return
    pfile = pq.ParquetFile(path)
    schema = arrow_schema(table)
    for batch in pfile.iter_batches(batch_size=chunk_rows, columns=table.column_names):
        arrays = []
        for fld in schema:
            col = batch.column(batch.schema.get_field_index(fld.name))
            try:
                arrays.append(col.cast(fld.type) if col.type != fld.type else col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValidationFailed(
                    f"{path}: column {fld.name} has type {col.type}, which does not convert to "
                    f"{fld.type} as {RAW_SCHEMA}.{table.name} requires ({exc}); fix the file's "
                    "schema or write it as CSV") from None
        frame = pa.Table.from_arrays(arrays, schema=pa.schema(
            [pa.field(f.name, f.type) for f in schema])).to_pandas(
            types_mapper={pa.int64(): pd.Int64Dtype()}.get, timestamp_as_object=False)
        for col in table.columns:
            if col.type == "date":
                frame[col.name] = pd.to_datetime(frame[col.name])
        yield frame


def _coerce_text(chunk: pd.DataFrame, table: RawTable, skip: set[int]) -> tuple[pd.DataFrame, Failures]:
    """Turn CSV text into typed columns; values that look right but are not (2025-02-30) fail."""
    typed = pd.DataFrame(index=chunk.index)
    failures = Failures()
    for col in table.columns:
        raw = chunk[col.name]
        if col.type == "text":
            typed[col.name] = raw
            continue
        stripped = raw.str.strip()
        if col.type == "integer":
            values = pd.to_numeric(stripped, errors="coerce").astype("Float64")
            bad_int = values.notna() & (values % 1 != 0)
            values = values.mask(bad_int).astype("Int64")
        elif col.type == "double":
            values = pd.to_numeric(stripped, errors="coerce").astype("float64")
        elif col.type == "date":
            values = pd.to_datetime(stripped, format="%Y-%m-%d", errors="coerce")
        else:
            values = pd.to_datetime(stripped, format="ISO8601", errors="coerce")
        broken = raw.notna() & values.isna()
        for pos in broken[broken].index:
            if pos not in skip:
                failures.add(int(pos), f"{col.name}={raw[pos]!r}: not a valid {col.type}",
                             f"valid_{col.type}")
        typed[col.name] = values
    return typed, failures


def _check_keys(warehouse: Warehouse, conn: Any, stage: str, table: RawTable, mode: str,
                result: LoadResult, bad_records: dict[int, dict[str, Any]],
                quarantine: bool) -> None:
    """Keys unique within the file and, when appending, not already loaded. All holders of a
    duplicated key are rejected: nobody can tell which of them is right."""
    key = qident(table.key)
    sql = (f"select s.{qident(ROW)}, s.{key} from {stage} s join (select {key} from {stage} "
           f"group by {key} having count(*) > 1) d on d.{key} = s.{key}")
    dupes = warehouse.execute(conn, sql)
    clashes: list[tuple] = []
    if mode == "append":
        clashes = warehouse.execute(
            conn, f"select s.{qident(ROW)}, s.{key} from {stage} s join "
                  f"{qualified(RAW_SCHEMA, table.name)} r on r.{key} = s.{key}")
    rows: list[int] = []
    for row, value in dupes:
        result.failures.add(int(row), f"{table.key}={value!r}: {UNIQUE} (appears more than once "
                                      "in the file)", UNIQUE)
        rows.append(int(row))
    for row, value in clashes:
        result.failures.add(int(row), f"{table.key}={value!r}: {UNIQUE} (already loaded in "
                                      f"{RAW_SCHEMA}.{table.name})", UNIQUE)
        rows.append(int(row))
    if not rows:
        return
    wanted = sorted(set(rows))  # rows whose records the report or the quarantine needs
    if not quarantine:
        wanted = wanted[:REPORT_ROWS]
    cols = ", ".join(qident(c) for c in table.column_names)
    for start in range(0, len(wanted), 1000):
        part = wanted[start:start + 1000]
        placeholders = ", ".join(["%s"] * len(part))
        found = warehouse.execute(
            conn, f"select {qident(ROW)}, {cols} from {stage} where {qident(ROW)} in ({placeholders})",
            part)
        for rec in found:
            bad_records[int(rec[0])] = dict(zip(table.column_names, rec[1:], strict=True))
    rejected = sorted(set(rows))
    for start in range(0, len(rejected), 1000):
        part = rejected[start:start + 1000]
        warehouse.execute(conn, f"delete from {stage} where {qident(ROW)} in "
                                f"({', '.join(['%s'] * len(part))})", part)


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
    out = {}
    for k, v in record.items():
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            out[k] = None
        elif isinstance(v, (pd.Timestamp, dt.date, dt.datetime)):
            out[k] = v.isoformat()
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def format_report(result: LoadResult, kind: str = "csv") -> str:
    """Human-readable: the failed expectations with counts, then the first failing rows."""
    lines = ["Failed expectations:"]
    for name, n in sorted(result.failures.by_expectation.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name}: {n} value(s)")
    lines.append("First failing rows:")
    for row in sorted(result.failures.by_row)[:REPORT_ROWS]:
        where = f"row {row} (line {row + 1})" if kind == "csv" else f"row {row}"
        lines.append(f"  {where}: " + "; ".join(result.failures.by_row[row]))
    hidden = len(result.failures.by_row) - REPORT_ROWS
    if hidden > 0:
        lines.append(f"  ... and {hidden} more row(s)")
    lines.append("Fix these rows, or run again with --quarantine to load the good rows and keep "
                 f"the bad ones in {RAW_SCHEMA}.{QUARANTINE_TABLE}.")
    return "\n".join(lines)
