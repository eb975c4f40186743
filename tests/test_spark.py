"""The project on Apache Spark (OA_TARGET=spark, local mode in this process), against DuckDB.

The small generated data set (2,000 people, 180 days) goes through the real loader into a Spark
warehouse, `oa build` runs every model, seed, data test and unit test there through dbt-spark,
`oa aipl backfill` computes eight AIPL days, and every example audience is built; then the
tables people and models read and every audience's members must be identical to DuckDB's, built
the same way. One Spark session serves the module (`make test-spark` runs it in one process).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from pathlib import Path

import pytest

from openaudience.core.warehouse import Warehouse
from tests.conftest import AIPL_HISTORY_START, AS_OF, Target, make_target, shared_build

pytestmark = pytest.mark.spark

COMPARED = ("marts.user_tags", "marts.rfm_default", "marts.rfm_lifetime", "marts.aipl_daily",
            "marts.ml_repurchase_features", "marts.product_tags", "marts.dim_identities",
            "marts.fct_orders")
VOLATILE = {"resolved_at"}  # when the row was written


def _build(target: Target, data: Path) -> dict:
    """Load, build, eight AIPL days, model outputs, every audience: what both engines go through."""
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.raw.loading import load_files
    from tests.support.ml_outputs import write_ml_outputs

    load_files(target.warehouse, [(table, data / f"{table}.parquet") for table in LOAD_ORDER])
    steps = {}
    for name, args in (("build", ("build", "--as-of", AS_OF)),
                       ("aipl", ("aipl", "backfill", "--start", AIPL_HISTORY_START, "--end", AS_OF))):
        done = target.oa(*args)
        assert done.returncode == 0, (f"oa {' '.join(args)} on {target.name}:\n"
                                      f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
        steps[name] = done.stdout
    write_ml_outputs(target.warehouse)
    done = target.oa("audience", "build", "--as-of", AS_OF)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    steps["audiences"] = done.stdout
    return steps


@pytest.fixture(scope="module")
def duck(small_demo, tmp_path_factory) -> Target:
    folder, steps = shared_build("spark_parity_duckdb", tmp_path_factory,
                                 lambda root: _build(make_target("duckdb", root, None, ""), small_demo))
    target = make_target("duckdb", folder, None, "")
    target.build_log = steps["build"]
    return target


@pytest.fixture(scope="module")
def spark(small_demo, tmp_path_factory) -> tuple[Target, dict]:
    target = make_target("spark", tmp_path_factory.mktemp("spark"), None, "")
    return target, _build(target, small_demo)


def _canon(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    if isinstance(value, decimal.Decimal):
        return round(float(value), 9)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def _rows(wh: Warehouse, sql: str) -> list[tuple]:
    return sorted((tuple(_canon(v) for v in row) for row in wh.query(sql)), key=repr)


def _diff(a: list[tuple], b: list[tuple]) -> str:
    only_a, only_b = sorted(set(a) - set(b), key=repr), sorted(set(b) - set(a), key=repr)
    return (f"{len(a)} rows on DuckDB, {len(b)} on Spark; DuckDB only: {only_a[:3]}; "
            f"Spark only: {only_b[:3]}")


def test_every_model_seed_data_test_and_unit_test_passes_on_spark(spark, duck):
    """The whole project ran on Spark: as many nodes passed as on DuckDB, none skipped or failed."""
    _, steps = spark

    def summary(log: str) -> str:
        return log.split("dbt build passed", 1)[1].split("\n", 1)[0]

    assert "dbt build passed" in steps["build"], steps["build"][-3000:]
    assert summary(steps["build"]) == summary(duck.build_log)
    assert not any(word in summary(steps["build"]) for word in ("error", "fail", "skip", "warn"))


@pytest.mark.parametrize("relation", COMPARED)
def test_tables_are_identical_on_spark_and_duckdb(spark, duck, relation):
    target, _ = spark
    schema, table = relation.split(".")
    duck_columns = [c for c in duck.warehouse.columns(schema, table) if c not in VOLATILE]
    spark_columns = [c for c in target.warehouse.columns(schema, table) if c not in VOLATILE]
    assert sorted(duck_columns) == sorted(spark_columns)
    sql = f"select {', '.join(duck_columns)} from {relation}"
    on_duck, on_spark = _rows(duck.warehouse, sql), _rows(target.warehouse, sql)
    assert on_duck, f"{relation} is empty: the comparison would prove nothing"
    assert on_duck == on_spark, _diff(on_duck, on_spark)


def test_every_audience_has_the_same_members(spark, duck):
    from openaudience.segments.engine import latest

    target, _ = spark
    names = sorted(p.stem for p in (Path(__file__).parents[1] / "audiences").glob("*.yml"))
    assert len(names) >= 15
    sql = ("select one_id, id_type, id_value from audiences.audience_members "
           "where audience = %s and version = %s")
    for name in names:
        on_duck = _rows(duck.warehouse, sql.replace("%s", "'" + name + "'", 1).replace(
            "%s", str(latest(duck.warehouse, name)["version"])))
        on_spark = _rows(target.warehouse, sql.replace("%s", "'" + name + "'", 1).replace(
            "%s", str(latest(target.warehouse, name)["version"])))
        assert on_duck == on_spark, f"{name}: " + _diff(on_duck, on_spark)


def test_model_features_are_read_from_spark_in_bounded_batches(spark, duck):
    """What the models train on, read as they read it: in batches of at most `batch_rows`, never
    the whole table in the driver at once."""
    target, _ = spark
    sql = "select * from marts.ml_repurchase_features"
    batches = list(target.warehouse.iter_batches(sql, batch_rows=700))
    assert len(batches) > 1 and max(len(b) for b in batches) <= 700
    on_spark = sorted((tuple(_canon(v) for v in row) for b in batches
                       for row in b.astype(object).itertuples(index=False)), key=repr)
    on_duck = _rows(duck.warehouse, sql)
    assert [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r) for r in on_spark] == \
        [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r) for r in on_duck]


def test_a_refused_file_leaves_every_table_as_it_was(spark, tmp_path):
    """Spark has no transaction to roll back: every file is staged and checked before any is
    swapped in, so a refused second file leaves the first table unchanged and no stage behind."""
    from openaudience.core.errors import ValidationFailed
    from openaudience.raw.loading import load_files

    target, _ = spark
    wh = target.warehouse
    before = {t: wh.row_count("raw", t) for t in ("products", "customers")}
    products = tmp_path / "products.csv"
    products.write_text("item_id,name,category,brand,price,season,listed_at\n"
                        "NEW1,Tee,apparel,Acme,19.90,all,2026-01-01 00:00:00\n")
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,mobile,email,gender,birth_date,city,member_level,registered_at\n"
                         "C1,13800138000,a@b.cn,robot,1990-01-01,Shanghai,gold,2026-01-01 10:00:00\n")
    with pytest.raises(ValidationFailed):
        load_files(wh, [("products", products), ("customers", customers)], mode="replace")
    assert {t: wh.row_count("raw", t) for t in ("products", "customers")} == before
    left = [r[1] for r in wh.query("show tables in raw") if "stage" in r[1]]
    assert left == []


def test_identity_keeps_its_ids_when_built_again(spark):
    """dim_identities reads its previous rows: on Spark from a copy made aside before it
    overwrites the table, dropped after."""
    target, _ = spark
    sql = "select node_key, one_id from marts.dim_identities"
    before = _rows(target.warehouse, sql)
    done = target.oa("build", "--select", "dim_identities", "--as-of", AS_OF)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _rows(target.warehouse, sql) == before
    assert not target.warehouse.table_exists("marts", "dim_identities__previous")


def test_a_pruned_version_drops_its_partition(spark):
    """Past `snapshots` (5 for cart_abandoners), a version's members go: on Spark its partition
    is dropped, while the version's row stays in the state store for the size history."""
    from openaudience.segments.engine import versions

    target, _ = spark
    for _ in range(5):
        done = target.oa("audience", "build", "cart_abandoners", "--as-of", AS_OF)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    every = {v["version"] for v in versions(target.warehouse, "cart_abandoners", kept_only=False)}
    kept = {v["version"] for v in versions(target.warehouse, "cart_abandoners")}
    held = {r[0] for r in target.warehouse.query(
        "select distinct version from audiences.audience_members where audience = 'cart_abandoners'")}
    assert len(every) == 6 and len(kept) == 5
    assert held == kept and min(every) not in held
