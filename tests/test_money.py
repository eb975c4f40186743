"""Money is exact from the raw file to the audience, on both engines.

Amounts are DECIMAL(18, 2) (NUMERIC on PostgreSQL), never doubles: 52.16 + 32.23 + 65.10 + 50.51
is 200.00, where doubles make it 199.99999999999997 in any order of summing, score one RFM step
too low at a 200 breakpoint and miss `spend >= 200`. A tiny shop is loaded through the real loader
(orders as CSV text, order lines as Parquet doubles), built with dbt, and asked what a user asks.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openaudience.core.errors import ValidationFailed
from openaudience.core.schema.raw import MONEY_PRECISION, MONEY_SCALE, to_decimal
from openaudience.raw.loading import load_file
from openaudience.segments.evaluate import count_members
from openaudience.segments.source import load_project
from tests.conftest import AS_OF, ENGINES, Target, make_target

TODAY = dt.date.fromisoformat(AS_OF)
EXACT_200 = ("52.16", "32.23", "65.10", "50.51")  # as doubles: 199.99999999999997 in any order

CUSTOMERS = """customer_id,mobile,email,gender,birth_date,city,member_level,registered_at
M1,13800138001,,female,1990-01-01,Shanghai,gold,2025-01-01 10:00:00
M2,13800138002,,male,1991-01-01,Shanghai,none,2025-01-01 10:00:00
M3,13800138003,,female,1992-01-01,Beijing,silver,2025-01-01 10:00:00
"""
PRODUCTS = """item_id,name,category,brand,price,season,listed_at
P1,Tea,food,Acme,49.90,all,2025-01-01 00:00:00
"""
# M1: four orders that sum to 200.00 exactly; M2: 0.10 + 0.20; M3: one cent short of 200
ORDERS = [("O1", "M1", "52.16"), ("O2", "M1", "32.23"), ("O3", "M1", "65.10"), ("O4", "M1", "50.51"),
          ("O5", "M2", "0.10"), ("O6", "M2", "0.20"), ("O7", "M3", "199.99")]
# the lines as a Parquet file of doubles, as exports write them: rounded to the fen on load
LINES = [52.16, 32.23, 65.1, 50.51, 0.1, 0.1 + 0.2 - 0.1, 199.99]


def _write_shop(folder: Path) -> dict[str, Path]:
    files = {"customers": folder / "customers.csv", "products": folder / "products.csv",
             "orders": folder / "orders.csv", "order_items": folder / "order_items.parquet",
             "behavior_events": folder / "behavior_events.csv"}
    files["customers"].write_text(CUSTOMERS)
    files["products"].write_text(PRODUCTS)
    files["orders"].write_text("order_id,customer_id,ordered_at,channel,status,total_amount\n" + "".join(
        f"{o},{c},2026-06-{20 + i:02d} 10:00:00,app,paid,{amount}\n"
        for i, (o, c, amount) in enumerate(ORDERS)))
    pq.write_table(pa.table({
        "order_item_id": [f"{o}-1" for o, _, _ in ORDERS],
        "order_id": [o for o, _, _ in ORDERS],
        "item_id": ["P1"] * len(ORDERS),
        "quantity": pa.array([1] * len(ORDERS), pa.int64()),
        "unit_price": pa.array(LINES, pa.float64()),
        "amount": pa.array(LINES, pa.float64()),
    }), files["order_items"])
    files["behavior_events"].write_text(
        "event_id,user_id_type,user_id,event_type,channel,occurred_at,object_attribute,object_value,"
        "item_id,event_count,amount\n" + "".join(
            f"E{i},member_id,{c},purchase,app,2026-06-{20 + i:02d} 10:00:00,product,Tea,P1,1,{amount}\n"
            for i, (_, c, amount) in enumerate(ORDERS)))
    return files


@pytest.fixture(scope="module", params=ENGINES)
def shop(request, tmp_path_factory) -> Target:
    """The tiny shop loaded and built (only what tags, RFM and product tags need) on one engine."""
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    target = make_target(request.param, tmp_path_factory.mktemp(request.param), cluster, "money")
    for table, path in _write_shop(tmp_path_factory.mktemp("files")).items():
        load_file(target.warehouse, table, path)
    target.dbt("build", "--select", "+user_tags +rfm_default +product_tags",
               "--indirect-selection", "cautious")
    return target


def _by_person(target: Target, sql: str) -> dict[str, tuple]:
    rows = target.warehouse.query(sql)
    return {r[0]: tuple(r[1:]) for r in rows}


def test_the_doubles_would_have_missed() -> None:
    """Why this file exists: the same amounts as doubles fall short of 200 in every order."""
    assert all(sum(p) < 200 for p in itertools.permutations(float(a) for a in EXACT_200))
    assert sum(Decimal(a) for a in EXACT_200) == Decimal("200.00")


def test_raw_holds_the_text_exactly_and_parquet_doubles_rounded_to_the_fen(shop: Target) -> None:
    wh = shop.warehouse
    orders = dict(wh.query("select order_id, total_amount from raw.orders"))
    assert orders == {o: Decimal(amount) for o, _, amount in ORDERS}
    lines = dict(wh.query("select order_id, amount from raw.order_items"))
    assert lines["O6"] == Decimal("0.20")  # 0.20000000000000004 in the file
    assert sum(lines[o] for o in ("O1", "O2", "O3", "O4")) == Decimal("200.00")


@pytest.mark.parametrize(("schema", "table", "column"), [
    ("raw", "orders", "total_amount"), ("raw", "order_items", "amount"),
    ("raw", "behavior_events", "amount"), ("staging", "stg_shop__orders", "total_amount"),
    ("marts", "fct_orders", "total_amount"), ("marts", "fct_behaviors", "behavior_amount"),
    ("marts", "user_tags", "spend_30d"), ("marts", "user_tags", "avg_order_value"),
    ("marts", "rfm_default", "monetary"), ("marts", "product_tags", "sales_amount_90d"),
])
def test_money_columns_are_decimal_at_the_contract_scale(shop: Target, schema: str, table: str,
                                                         column: str) -> None:
    """The raw DDL (warehouse.py), the dbt macro type_money() and raw_tables.MONEY_* agree."""
    found = shop.warehouse.query(
        "select numeric_precision, numeric_scale from information_schema.columns "
        "where table_schema = %s and table_name = %s and column_name = %s", [schema, table, column])
    assert found == [(MONEY_PRECISION, MONEY_SCALE)]


def test_spend_tags_land_exactly_on_the_sum(shop: Target) -> None:
    tags = _by_person(shop, "select t.member_id, t.spend_30d, t.spend_total, t.avg_order_value "
                            "from marts.user_tags t where t.member_id is not null")
    assert tags["M1"] == (Decimal("200.00"), Decimal("200.00"), Decimal("50.00"))
    assert tags["M2"] == (Decimal("0.30"), Decimal("0.30"), Decimal("0.15"))
    assert tags["M3"][0] == Decimal("199.99")


def test_rfm_monetary_scores_the_200_breakpoint(shop: Target) -> None:
    """rfm_default's monetary breakpoints are [0, 200, 500, ...]: 200.00 scores 2, 199.99 scores 1."""
    rfm = _by_person(shop, "select i.id_value, r.monetary, r.m_score from marts.rfm_default r "
                           "join marts.dim_identities i on i.one_id = r.one_id and i.id_type = 'member_id'")
    assert rfm["M1"] == (Decimal("200.00"), 2)
    assert rfm["M3"] == (Decimal("199.99"), 1)


def test_product_sales_sum_the_lines_exactly(shop: Target) -> None:
    sales = shop.warehouse.query("select sales_amount_90d from marts.product_tags where item_id = 'P1'")
    assert sales == [(Decimal("200.00") + Decimal("0.30") + Decimal("199.99"),)]


AUDIENCES = {
    "spent_200": "tag: {name: spend_30d, \">=\": 200}",
    "spent_at_most_0_3": "tag: {name: spend_30d, \"<=\": 0.3}",
    "spent_exactly_0_30": "tag: {name: spend_30d, \"=\": 0.30}",
    "spent_200_point_00": "tag: {name: spend_30d, \">=\": 200.00}",
    "bought_for_200": "behavior: {did: purchase, last_days: 30, amount: {\">=\": 200}}",
}


@pytest.mark.parametrize(("name", "members"), [
    ("spent_200", 1), ("spent_at_most_0_3", 1), ("spent_exactly_0_30", 1), ("spent_200_point_00", 1),
    ("bought_for_200", 1),
])
def test_audience_thresholds_compare_exactly(shop: Target, tmp_path: Path, name: str,
                                             members: int) -> None:
    """The compiler's literals (200, 200.0, 0.3) compare exactly with a DECIMAL column: M1's 200.00
    is `>= 200`, M2's 0.10 + 0.20 is `<= 0.3` and `= 0.30`; M3's 199.99 is neither."""
    (tmp_path / f"{name}.yml").write_text(
        f"name: {name}\ndescription: money threshold\nowner: test\nid_type: member_id\n"
        f"where:\n  {AUDIENCES[name]}\n")
    size, with_id = count_members(shop.warehouse, load_project(tmp_path), name, TODAY)
    assert (size, with_id) == (members, members)


@pytest.mark.parametrize(("text", "value"), [
    ("199.99", Decimal("199.99")), (" 0.1 ", Decimal("0.10")), ("1e3", Decimal("1000.00")),
    (0.1 + 0.2, Decimal("0.30")), (2.675, Decimal("2.68")), (Decimal("3.1000"), Decimal("3.10")),
])
def test_to_decimal_keeps_text_exact_and_rounds_doubles(text, value) -> None:
    assert to_decimal(text) == value and to_decimal(text).as_tuple().exponent == -MONEY_SCALE


@pytest.mark.parametrize(("text", "reason"), [
    ("1.234", "more than 2 decimals"), ("1e20", "too large"), ("abc", "not a number"),
    ("NaN", "not a number"), (float("inf"), "not a number"), (1e16, "too large"),
    (Decimal("1.2345"), "more than 2 decimals"),
])
def test_to_decimal_refuses_what_does_not_fit(text, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        to_decimal(text)


def test_a_value_past_the_scale_or_the_precision_is_a_row_error(target: Target, tmp_path: Path) -> None:
    """Never rounded away silently: 1.234 and 1e20 fail their rows; --quarantine loads the rest."""
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer_id,ordered_at,channel,status,total_amount\n"
                    "O1,M1,2026-06-01 10:00:00,app,paid,199.99\n"
                    "O2,M1,2026-06-01 10:00:00,app,paid,1.234\n"
                    "O3,M1,2026-06-01 10:00:00,app,paid,1e20\n")
    with pytest.raises(ValidationFailed) as caught:
        load_file(target.warehouse, "orders", path)
    assert "total_amount='1.234': not a valid decimal: has more than 2 decimals" in caught.value.report
    assert "total_amount='1e20': not a valid decimal: is too large" in caught.value.report
    result = load_file(target.warehouse, "orders", path, quarantine=True)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    assert target.warehouse.query("select total_amount from raw.orders") == [(Decimal("199.99"),)]
    records = [r[0] for r in target.warehouse.query(
        "select record from raw.raw_quarantine order by row_number")]
    assert '"total_amount": "1.234"' in records[0]


def test_parquet_money_that_does_not_fit_fails_its_row(target: Target, tmp_path: Path) -> None:
    """Doubles are rounded to the fen; a decimal with more places, or a double past 16 digits of
    yuan, fails its own row rather than the whole file."""
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.table({
        "order_id": ["O1", "O2"], "customer_id": ["M1", "M1"],
        "ordered_at": pa.array([dt.datetime(2026, 6, 1, 10)] * 2), "channel": ["app", "app"],
        "status": ["paid", "paid"],
        "total_amount": pa.array([Decimal("49.9000"), Decimal("0.0050")], pa.decimal128(10, 4)),
    }), path)
    result = load_file(target.warehouse, "orders", path, quarantine=True)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    assert "has more than 2 decimals" in result.failures.by_row[2][0]
    path = tmp_path / "doubles.parquet"
    pq.write_table(pa.table({
        "order_id": ["O3", "O4"], "customer_id": ["M1", "M1"],
        "ordered_at": pa.array([dt.datetime(2026, 6, 1, 10)] * 2), "channel": ["app", "app"],
        "status": ["paid", "paid"], "total_amount": pa.array([0.1 + 0.2, 1e20], pa.float64()),
    }), path)
    result = load_file(target.warehouse, "orders", path, quarantine=True)
    assert "is too large" in result.failures.by_row[2][0]
    amounts = dict(target.warehouse.query("select order_id, total_amount from raw.orders"))
    assert amounts == {"O1": Decimal("49.90"), "O3": Decimal("0.30")}
