"""`oa load`: contract validation, whole-file rejection, quarantine, transactions — on both engines."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openaudience.core.errors import UserError, ValidationFailed
from openaudience.raw.loading import load_file

HEADER = "customer_id,mobile,email,gender,birth_date,city,member_level,registered_at\n"
GOOD = [
    "M1,13800138000,ann@example.com,female,1990-05-01,Shanghai,gold,2024-01-01 10:00:00",
    "M2,+86 139 0013 9000, BOB@Example.com ,male,1985-01-01,Beijing,none,2024-02-01",
    "M3,,,unknown,,Hangzhou,silver,2025-03-01 08:30:00",
]
BAD_MOBILE = "M4,12345,dan@example.com,male,1970-01-01,Shenzhen,none,2024-01-01 00:00:00"


def write_csv(tmp_path, rows, name="customers.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def raw_count(target, table="customers"):
    wh = target.warehouse
    return wh.row_count("raw", table) if wh.table_exists("raw", table) else 0


def test_good_file_loads_every_row(target, tmp_path):
    result = load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD))
    assert result.rows_loaded == 3
    assert raw_count(target) == 3
    # raw keeps what the file said; staging cleans it
    mobile = target.warehouse.query("select mobile from raw.customers where customer_id = 'M2'")
    assert mobile == [("+86 139 0013 9000",)]


def test_one_bad_row_rejects_the_file_and_names_row_and_expectation(target, tmp_path):
    load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD[:1], "first.csv"))
    before = raw_count(target)
    path = write_csv(tmp_path, [GOOD[1], BAD_MOBILE, GOOD[2]])
    with pytest.raises(ValidationFailed) as caught:
        load_file(target.warehouse, "customers", path)
    assert "1 of 3 rows" in str(caught.value)
    assert "nothing was loaded" in str(caught.value)
    report = caught.value.report
    assert "row 2 (line 3)" in report
    assert "mobile='12345'" in report
    assert "expect_column_values_to_match_regex" in report
    assert raw_count(target) == before


def test_quarantine_loads_good_rows_and_parks_the_bad_one_with_its_reason(target, tmp_path):
    path = write_csv(tmp_path, [GOOD[0], BAD_MOBILE, GOOD[2]])
    result = load_file(target.warehouse, "customers", path, quarantine=True)
    assert (result.rows_loaded, result.rows_quarantined) == (2, 1)
    assert raw_count(target) == 2
    rows = target.warehouse.query(
        "select table_name, row_number, record, reasons from raw.raw_quarantine")
    assert len(rows) == 1
    table, row, record, reasons = rows[0]
    assert (table, row) == ("customers", 2)
    assert json.loads(record)["customer_id"] == "M4"
    assert "expect_column_values_to_match_regex" in reasons and "mobile" in reasons


def test_every_kind_of_broken_value_is_caught(target, tmp_path):
    rows = [
        "M1,13800138000,a@b.cn,female,1990-02-30,Shanghai,gold,2024-01-01",     # no such date
        "M2,13800138001,a@b.cn,robot,1990-01-01,Shanghai,gold,2024-01-01",      # enum
        "M3,13800138002,a@b.cn,male,1990-01-01,Shanghai,gold,2999-01-01",       # future
        ",13800138003,a@b.cn,male,1990-01-01,Shanghai,gold,2024-01-01",         # null key
        "M5,13800138004,not-an-email,male,1990-01-01,Shanghai,gold,2024-01-01",  # format
        "M6,13800138005,a@b.cn,male,1990-01-01,Shanghai,gold,yesterday",        # type
        "M7,13800138006,a@b.cn,male,1990-01-01,Shanghai,gold,2024-01-01",
        "M7,13800138007,a@b.cn,male,1990-01-01,Shanghai,gold,2024-01-01",       # duplicate key
    ]
    with pytest.raises(ValidationFailed) as caught:
        load_file(target.warehouse, "customers", write_csv(tmp_path, rows))
    report = caught.value.report
    expected = {
        1: "not a valid date",
        2: "expect_column_values_to_be_in_set",
        3: "expect_column_values_to_be_between",
        4: "expect_column_values_to_not_be_null",
        5: "expect_column_values_to_match_regex",
        6: "registered_at must be a timestamp",
        7: "expect_column_values_to_be_unique",
        8: "expect_column_values_to_be_unique",
    }
    for row, text in expected.items():
        line = next(ln for ln in report.splitlines() if ln.strip().startswith(f"row {row} "))
        assert text in line, (row, line)
    assert raw_count(target) == 0


def test_append_refuses_keys_already_loaded_and_replace_swaps(target, tmp_path):
    load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD, "a.csv"))
    with pytest.raises(ValidationFailed, match="1 of 1 rows"):
        load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD[:1], "b.csv"))
    assert raw_count(target) == 3
    load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD[:1], "c.csv"), mode="replace")
    assert raw_count(target) == 1


def test_parquet_loads_and_a_wrong_column_type_is_refused(target, tmp_path):
    frame = pd.read_csv(write_csv(tmp_path, GOOD), dtype=str)
    frame["birth_date"] = pd.to_datetime(frame["birth_date"]).dt.date
    frame["registered_at"] = pd.to_datetime(frame["registered_at"], format="ISO8601")
    good = tmp_path / "customers.parquet"
    frame.to_parquet(good, index=False)
    assert load_file(target.warehouse, "customers", good).rows_loaded == 3

    broken = pa.table({**{c: [None if pd.isna(v) else str(v) for v in frame[c]]
                          for c in frame.columns},
                       "registered_at": pa.array([1.5, 2.5, 3.5])})
    bad = tmp_path / "bad.parquet"
    pq.write_table(broken, bad)
    with pytest.raises(ValidationFailed, match="column registered_at has type double"):
        load_file(target.warehouse, "customers", bad, mode="replace")
    assert raw_count(target) == 3


def test_missing_and_unknown_columns_are_named(target, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,phone\nM1,13800138000\n")
    with pytest.raises(ValidationFailed) as caught:
        load_file(target.warehouse, "customers", path)
    message = str(caught.value)
    assert "missing column(s): mobile, email" in message
    assert "unknown column(s): phone" in message


def test_a_failure_while_writing_leaves_nothing_behind(target, tmp_path, monkeypatch):
    """The load is one transaction: if the final insert breaks, the raw table is untouched."""
    load_file(target.warehouse, "customers", write_csv(tmp_path, GOOD[:1], "a.csv"))
    import openaudience.raw.loading as loading

    real = loading._write_quarantine

    def explode(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(loading, "_write_quarantine", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        load_file(target.warehouse, "customers", write_csv(tmp_path, [GOOD[1], BAD_MOBILE]),
                  quarantine=True)
    assert raw_count(target) == 1
    assert target.warehouse.query("select count(*) from raw.raw_quarantine") == [(0,)]


def test_unknown_table_and_file_type_are_user_errors(target, tmp_path):
    with pytest.raises(UserError, match="the raw tables are: customers"):
        load_file(target.warehouse, "clients", write_csv(tmp_path, GOOD))
    odd = tmp_path / "customers.xlsx"
    odd.write_text("x")
    with pytest.raises(UserError, match="reads .csv, .csv.gz or .parquet"):
        load_file(target.warehouse, "customers", odd)


def test_cli_exits_non_zero_and_prints_row_and_expectation(target, tmp_path):
    path = write_csv(tmp_path, [GOOD[0], BAD_MOBILE])
    done = target.oa("load", "customers", str(path))
    assert done.returncode == 2
    assert "row 2 (line 3)" in done.stderr
    assert "expect_column_values_to_match_regex" in done.stderr
    assert "Traceback" not in done.stderr
    assert raw_count(target) == 0

    done = target.oa("load", "customers", str(path), "--quarantine")
    assert done.returncode == 0, done.stderr
    assert "1 quarantined" in done.stdout
    assert raw_count(target) == 1
