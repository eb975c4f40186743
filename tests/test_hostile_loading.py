"""Hostile files through `oa load` and `oa load-dir`, on DuckDB and PostgreSQL.

Each is refused with exit code 2 and one message that names the file and the line or row, with
no traceback and not one row written (every table's count is the same before and after).

Two commands per engine run the real `oa` script in a subprocess; the rest run its entry point
(`cli.main`) in this process with the target's environment, the same code path, so the suite
pays for importing pandas and Great Expectations once rather than per command. The friendly
cases (offsets converted to OA_TIMEZONE, keys read as staging reads them) call the loader.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openaudience.core.errors import ValidationFailed
from openaudience.core.schema.raw import RAW_TABLES
from openaudience.core.settings import PROJECT_ROOT
from openaudience.raw.loading import FIELD_LIMIT, load_file
from tests.support.hostile import assert_refused, oa_in_process, table_counts

CUSTOMERS = "customer_id,mobile,email,gender,birth_date,city,member_level,registered_at"
ORDER_ITEMS = "order_item_id,order_id,item_id,quantity,unit_price,amount"
SEED_CUSTOMERS = [
    "M1,13800138000,ann@example.com,female,1990-05-01,Shanghai,gold,2024-01-01 10:00:00",
    "M2,13900139000,bob@example.com,male,1985-01-01,Beijing,none,2024-02-01",
]


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def seeded(target, tmp_path):
    """The target with two customers and an order line loaded: rows a refused command must keep."""
    load_file(target.warehouse, "customers", write(tmp_path / "seed_c.csv", CUSTOMERS, SEED_CUSTOMERS))
    load_file(target.warehouse, "order_items",
              write(tmp_path / "seed_i.csv", ORDER_ITEMS, ["I0,O0,P0,1,10.00,10.00"]))
    return target


Oa = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def oa(target) -> Oa:
    """`oa ARGS` through the script's entry point in this process, as the target's environment."""

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in target.env.items() if k.startswith(("OA_", "PG"))}
        return oa_in_process(args, env)

    return run


def refused(target, run: Oa, *args: str) -> tuple[str, dict[str, int]]:
    """Run `oa *args`; it must exit 2 without a traceback and leave every table as it was."""
    before = table_counts(target.warehouse)
    out = assert_refused(run(*args))
    assert table_counts(target.warehouse) == before, out
    return out, before


def test_a_file_whose_bytes_are_not_what_its_name_says_is_refused_before_any_row(seeded, oa, tmp_path):
    good = "\n".join([CUSTOMERS, *SEED_CUSTOMERS]).replace("M1", "N1").replace("M2", "N2") + "\n"
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes((good + "N3,,,male,,上海,gold,2024-01-01\n").encode("gbk"))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((CUSTOMERS + "\nN4,,,male,,Zürich,gold,2024-01-01\n").encode("latin-1"))
    parquet_bytes = tmp_path / "export.csv"
    pq.write_table(pa.table({"customer_id": ["N5"]}), parquet_bytes)
    csv_bytes = tmp_path / "export.parquet"
    csv_bytes.write_text(good)
    packed = gzip.compress((good + "".join(f"N{i},,,male,,,gold,2024-01-01\n" for i in range(10, 9000)))
                           .encode())
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    corrupt = tmp_path / "corrupt.csv.gz"  # every byte there, the checksum wrong
    corrupt.write_bytes(packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:])
    stray = tmp_path / "wide.csv"
    stray.write_text(CUSTOMERS + "," + ",".join(f"x{i}" for i in range(1000)) + "\n")

    cases = [
        (gbk, ["gbk.csv: line 4 is not UTF-8 (byte 0x", "save the file as UTF-8"]),
        (latin, ["latin1.csv: line 2 is not UTF-8 (byte 0xfc", "save the file as UTF-8"]),
        (parquet_bytes, ["export.csv: the file looks like Parquet, not CSV; rename it to export.parquet"]),
        (csv_bytes, ["export.parquet: the file looks like text (CSV?), not Parquet",
                     "rename it to export.csv"]),
        (truncated, ["truncated.csv.gz: the gzip data is truncated or corrupt after line"]),
        (corrupt, ["corrupt.csv.gz: the gzip data is truncated or corrupt", "CRC check failed"]),
        (stray, ["wide.csv: unknown column(s): x0, x1, x2, x3, x4, x5, x6, x7, x8, x9 ... and 990 more"]),
    ]
    out, _ = refused(seeded, seeded.oa, "load", "customers", str(gbk))  # the script itself
    assert cases[0][1][0] in out, out
    for path, needles in cases:
        out, _ = refused(seeded, oa, "load", "customers", str(path))
        for needle in needles:
            assert needle in out, (path.name, out)
    assert "x10" not in out


def test_broken_rows_are_refused_each_with_its_line_and_the_value_as_written(seeded, tmp_path):
    rows = [
        "C1,,,female,,Shanghai,gold,2024-01-01",                       # row 1, line 2: good
        CUSTOMERS,                                                     # row 2, line 3: concatenated
        "C3,,,male,,{},gold,2024-01-01".format("x" * (FIELD_LIMIT + 1)),  # row 3, line 4
        'C4,,,male,,"Room 1\nBuilding 2",gold,2024-01-01',              # row 4, lines 5-6: good
        "",                                                            # line 7: blank, skipped
        "C5,,,male,,a\x00b,gold,2024-01-01",                           # row 5, line 8: NUL
        "C6,,,[bold red]robot[/],,,gold,2024-01-01",                    # row 6, line 9: markup
        "C7,,,male,,,gold,2026-06-01T10:00:00+25:00",                  # row 7, line 10: no such offset
        "   ,,,male,,,gold,2024-01-01",                                # row 8, line 11: blank key
        " M1 ,,,male,,,gold,2024-01-01",                               # row 9, line 12: M1 is loaded
    ]
    out, _ = refused(seeded, seeded.oa, "load", "customers",  # the script itself
                     str(write(tmp_path / "export.csv", CUSTOMERS, rows)))
    for needle in [
        "export.csv: 7 of 9 rows break the contract of raw.customers; nothing was loaded",
        "row 2 (line 3): this line repeats the header (were files concatenated?)",
        f"row 3 (line 4): city: a value of {FIELD_LIMIT + 1:,} characters, over the limit of "
        f"{FIELD_LIMIT:,} per field",
        "row 5 (line 8): city='a\\x00b': contains a NUL character",
        "row 6 (line 9): gender='[bold red]robot[/]': expect_column_values_to_be_in_set",
        "row 7 (line 10): registered_at='2026-06-01T10:00:00+25:00': not a valid timestamp",
        "row 8 (line 11): customer_id='   ': blank once spaces are trimmed",
        "row 9 (line 12): customer_id=' M1 ': expect_column_values_to_be_unique (already loaded in "
        "raw.customers, as 'M1' once spaces are trimmed",
    ]:
        assert needle in out, (needle, out)
    assert "row 1 " not in out and "row 4 " not in out
    assert len(out) < 20_000, "the oversized field is named, not printed"

    # with --quarantine the good rows load as written and the oversized value is kept cut short
    path = tmp_path / "export.csv"
    result = load_file(seeded.warehouse, "customers", path, quarantine=True)
    assert (result.rows_loaded, result.rows_quarantined) == (2, 7)
    city = seeded.warehouse.query("select city from raw.customers where customer_id = 'C4'")
    assert city == [("Room 1\nBuilding 2",)]
    record = seeded.warehouse.query("select record from raw.raw_quarantine where row_number = 3")
    assert 1000 < len(record[0][0]) < 2000, len(record[0][0])


def test_numbers_that_cannot_be_stored_are_row_errors_showing_the_files_value(seeded, oa, tmp_path):
    rows = [
        "I1,O1,P1,99999999999999999999,10.00,10.00",    # past BIGINT
        "I2,O1,P1,-9223372036854775809,10.00,10.00",    # one below BIGINT's least
        "I3,O1,P1,1,inf,10.00",
        "I4,O1,P1,1,NaN,10.00",
        "I5,O1,P1,1,10.00,1e999",
        "I6,O1,P1,[red]2[/],10.00,10.00",
        "I7,O1,P1,9223372036854775807,10.00,10.00",     # BIGINT's greatest: fine
    ]
    path = write(tmp_path / "order_items.csv", ORDER_ITEMS, rows)
    out, before = refused(seeded, oa, "load", "order_items", str(path))
    for needle in [
        "order_items.csv: 6 of 7 rows break the contract of raw.order_items",
        "row 1 (line 2): quantity='99999999999999999999': outside the BIGINT range",
        "row 2 (line 3): quantity='-9223372036854775809': outside the BIGINT range",
        "row 3 (line 4): unit_price='inf':",
        "row 4 (line 5): unit_price='NaN':",
        "row 5 (line 6): amount='1e999':",
        "row 6 (line 7): quantity='[red]2[/]':",
    ]:
        assert needle in out, (needle, out)
    assert "row 7 " not in out

    # with --quarantine the one good row loads, its BIGINT exact on both engines
    load_file(seeded.warehouse, "order_items", path, quarantine=True)
    quantity = seeded.warehouse.query("select quantity from raw.order_items where order_item_id = 'I7'")
    assert quantity == [(9223372036854775807,)]
    assert table_counts(seeded.warehouse)["raw.raw_quarantine"] == before["raw.raw_quarantine"] + 6


def test_a_quarantine_report_prints_the_files_values_not_markup(seeded, oa, tmp_path):
    rows = ["C1,,,[/],,,gold,2024-01-01", "C2,,,[bold]robot,,,gold,2024-01-01",
            "C3,,,male,,,gold,2024-01-01"]
    done = oa("load", "customers", str(write(tmp_path / "c.csv", CUSTOMERS, rows)), "--quarantine")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "gender='[/]'" in out and "gender='[bold]robot'" in out, out
    assert "2 quarantined" in out


def test_replace_with_a_file_of_no_rows_needs_force(seeded, oa, tmp_path):
    empty = write(tmp_path / "customers.csv", CUSTOMERS, [])
    out, _ = refused(seeded, oa, "load", "customers", str(empty), "--mode", "replace")
    assert "customers.csv: the file has no rows, so --mode replace would empty raw.customers (2 rows " \
           "now); nothing was changed" in out
    assert "add --force to empty the table on purpose" in out

    with pytest.raises(ValidationFailed, match="all 1 rows were refused, so --mode replace would empty"):
        load_file(seeded.warehouse, "customers", write(tmp_path / "bad.csv", CUSTOMERS, ["X,,,robot,,,,"]),
                  mode="replace", quarantine=True)

    done = oa("load", "customers", str(empty), "--mode", "replace", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert seeded.warehouse.row_count("raw", "customers") == 0


def test_load_dir_is_all_or_nothing(seeded, oa, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    write(folder / "customers.csv", CUSTOMERS, ["N1,,,male,,,gold,2024-01-01"])  # would replace
    write(folder / "identity_links.csv",
          "link_id,left_id_type,left_id,right_id_type,right_id,source,observed_at", [])
    write(folder / "order_items.csv", ORDER_ITEMS, ["I1,O1,P1,1,inf,10.00"])
    out, _ = refused(seeded, oa, "load-dir", str(folder))
    assert "order_items.csv: 1 of 1 rows break the contract of raw.order_items" in out
    assert seeded.warehouse.query("select customer_id from raw.customers order by 1") == [("M1",), ("M2",)]

    (folder / "order_items.csv").unlink()  # now only the empty identity_links can refuse
    load_file(seeded.warehouse, "identity_links", write(
        tmp_path / "links.csv", "link_id,left_id_type,left_id,right_id_type,right_id,source,observed_at",
        ["L1,member_id,M1,mobile,13800138000,crm,2024-01-01"]))
    out, _ = refused(seeded, oa, "load-dir", str(folder))
    assert "identity_links.csv: the file has no rows" in out
    done = oa("load-dir", str(folder), "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert seeded.warehouse.query("select customer_id from raw.customers") == [("N1",)]
    assert seeded.warehouse.row_count("raw", "identity_links") == 0


def test_timestamps_with_an_offset_are_converted_to_the_project_time_zone(target, tmp_path):
    """Raw timestamps are wall-clock times in OA_TIMEZONE (default Asia/Shanghai, UTC+8 all
    year); a value with an offset or Z is an instant and lands as that zone's wall-clock time."""
    assert target.settings.timezone == "Asia/Shanghai"
    shanghai = ZoneInfo("Asia/Shanghai")
    utc_now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    recent = utc_now - dt.timedelta(minutes=30)  # in the past, though its UTC wall time is 8 h behind
    rows = {
        "T1": ("2026-06-01T10:00:00+08:00", dt.datetime(2026, 6, 1, 10, 0)),
        "T2": ("2026-06-01T02:00:00Z", dt.datetime(2026, 6, 1, 10, 0)),
        "T3": ("2026-06-01 10:00:00-05:00", dt.datetime(2026, 6, 1, 23, 0)),
        "T4": ("2026-06-01T10:00:00.250+0530", dt.datetime(2026, 6, 1, 12, 30, 0, 250_000)),
        "T5": ("2026-06-01 10:00", dt.datetime(2026, 6, 1, 10, 0)),  # naive: already local
        "T6": (recent.strftime("%Y-%m-%dT%H:%M:%SZ"),
               recent.astimezone(shanghai).replace(tzinfo=None)),
        "T7": (utc_now.astimezone(shanghai).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S"),
               utc_now.astimezone(shanghai).replace(tzinfo=None)),
    }
    path = write(tmp_path / "c.csv", CUSTOMERS,
                 [f"{key},,,male,,,gold,{text}" for key, (text, _) in rows.items()])
    assert load_file(target.warehouse, "customers", path).rows_loaded == len(rows)
    loaded = dict(target.warehouse.query("select customer_id, registered_at from raw.customers"))
    assert loaded == {key: want for key, (_, want) in rows.items()}

    # a Parquet column with a zone is converted the same way
    zoned = pa.table({c: pa.array([None] * 2, pa.string()) for c in CUSTOMERS.split(",")})
    zoned = zoned.set_column(0, "customer_id", pa.array(["P1", "P2"])).set_column(
        3, "gender", pa.array(["male", "female"])).set_column(
        7, "registered_at", pa.array([dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC),
                                      dt.datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("America/New_York"))],
                                     pa.timestamp("us", tz="UTC")))
    pq.write_table(zoned.set_column(4, "birth_date", pa.array([None, None], pa.date32())),
                   tmp_path / "zoned.parquet")
    load_file(target.warehouse, "customers", tmp_path / "zoned.parquet")
    assert target.warehouse.query("select registered_at from raw.customers where customer_id like 'P%' "
                                  "order by customer_id") == [(dt.datetime(2026, 6, 1, 10, 0),),
                                                              (dt.datetime(2026, 6, 2, 0, 0),)]

    future = (utc_now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(ValidationFailed) as caught:
        load_file(target.warehouse, "customers",
                  write(tmp_path / "f.csv", CUSTOMERS, [f"T9,,,male,,,gold,{future}"]))
    assert "not in the future" in caught.value.report


def test_keys_are_compared_the_way_staging_reads_them(target, tmp_path):
    """Staging selects trim(<key>): the loader compares keys with the engine's own trim(), so a key
    with surrounding spaces loads as written and counts as its trimmed self."""
    wh = target.warehouse
    load_file(wh, "customers", write(tmp_path / "a.csv", CUSTOMERS, [" K1 ,,,male,,,gold,2024-01-01"]))
    assert wh.query("select customer_id, trim(customer_id) from raw.customers") == [(" K1 ", "K1")]
    with pytest.raises(ValidationFailed) as caught:  # K1 is loaded already, as staging sees it
        load_file(wh, "customers", write(tmp_path / "b.csv", CUSTOMERS, ["K1,,,male,,,gold,2024-01-01"]))
    assert "already loaded in raw.customers" in caught.value.report
    with pytest.raises(ValidationFailed) as caught:  # one key twice once trimmed: both refused
        load_file(wh, "customers", write(tmp_path / "c.csv", CUSTOMERS,
                                         ["K2,,,male,,,gold,2024-01-01", "K2  ,,,male,,,gold,2024-01-01"]))
    assert "2 of 2 rows" in str(caught.value)
    assert wh.row_count("raw", "customers") == 1


@pytest.mark.parametrize("table", sorted(RAW_TABLES))
def test_staging_reads_every_raw_key_trimmed_as_the_loader_compares_it(table):
    """The loader's key comparison (trim) and staging's key expression must agree."""
    key = RAW_TABLES[table].key
    sql = _staging_sql(table)
    assert re.search(rf"\btrim\(\s*{key}\s*\)\s+as\s+{key}\b", sql), (table, key)


def _staging_sql(table: str) -> str:
    """The staging model reading raw `table`, with a staging macro it calls expanded."""
    for path in sorted((PROJECT_ROOT / "models" / "staging").rglob("*.sql")):
        text = path.read_text()
        # a raw source: not the tables the delivery engine and the event ingest write
        if re.search(rf"source\(\s*'(?!delivery'|events')\w+'\s*,\s*'{table}'\s*\)", text):
            return text
        call = re.search(rf"\{{\{{\s*(\w+)\(\s*'{table}'\s*,\s*'(\w+)'\s*\)\s*\}}\}}", text)
        if call:
            macro = (PROJECT_ROOT / "macros" / "staging" / f"{call.group(1)}.sql").read_text()
            return macro.replace("{{ key }}", call.group(2))
    raise AssertionError(f"no staging model reads raw.{table}")
