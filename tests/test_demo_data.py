"""Tests of the synthetic demo-data generator: determinism, the raw contract, realism, integrity."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openaudience.core.schema.raw import RAW_TABLES
from openaudience.demo.generator import DemoConfig, arrow_schema, generate

END = dt.date(2025, 11, 20)
SMALL = DemoConfig(users=3_000, days=120, seed=7, end_date=END, chunk_users=1_000)
YEAR = DemoConfig(users=2_000, days=365, seed=11, end_date=END, chunk_users=700)
GENERATED = [name for name, table in RAW_TABLES.items() if not table.declared_only]


def _read(out: Path, table: str) -> pd.DataFrame:
    return pq.read_table(out / f"{table}.parquet").to_pandas()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], list]:
    out = tmp_path_factory.mktemp("small")
    calls: list[tuple[str, int, int]] = []
    counts = generate(out, SMALL, progress=lambda *a: calls.append(a))
    return out, counts, calls


@pytest.fixture(scope="module")
def tables(small) -> dict[str, pd.DataFrame]:
    out, _, _ = small
    return {name: _read(out, name) for name in RAW_TABLES}


@pytest.fixture(scope="module")
def year_orders(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("year")
    generate(out, YEAR)
    return _read(out, "orders")


# --- determinism -------------------------------------------------------------------------------


def test_same_config_gives_identical_tables(small, tables, tmp_path: Path) -> None:
    generate(tmp_path, SMALL)
    for name in RAW_TABLES:
        pd.testing.assert_frame_equal(_read(tmp_path, name), tables[name], check_exact=True)


def test_different_seed_differs(tables, tmp_path: Path) -> None:
    generate(tmp_path, DemoConfig(users=SMALL.users, days=SMALL.days, seed=SMALL.seed + 1,
                                  end_date=END, chunk_users=SMALL.chunk_users))
    for name in GENERATED:
        assert not _read(tmp_path, name).equals(tables[name]), name


# --- files, manifest, progress -----------------------------------------------------------------


def test_counts_manifest_and_progress(small, tables) -> None:
    out, counts, calls = small
    assert counts == {name: len(df) for name, df in tables.items()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["row_counts"] == counts
    assert manifest["config"] == {"users": 3_000, "days": 120, "seed": 7,
                                  "end_date": "2025-11-20", "chunk_users": 1_000}
    assert [c for c in calls if c[0] == "users"] == [("users", 1_000, 3_000),
                                                     ("users", 2_000, 3_000),
                                                     ("users", 3_000, 3_000)]
    assert counts["customers"] == 3_000
    assert counts["products"] == 200
    for name in GENERATED:
        assert counts[name] > 0, name


def test_end_date_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="end_date"):
        generate(tmp_path, DemoConfig(users=10))


def test_zero_users_writes_empty_tables(tmp_path: Path) -> None:
    counts = generate(tmp_path, DemoConfig(users=0, days=30, end_date=END))
    assert counts["customers"] == counts["orders"] == counts["behavior_events"] == 0
    assert counts["products"] == 200
    for name, table in RAW_TABLES.items():
        assert pq.read_schema(tmp_path / f"{name}.parquet") == arrow_schema(table)


# --- the raw contract --------------------------------------------------------------------------

ARROW = {"text": pa.string(), "integer": pa.int64(), "double": pa.float64(),
         "decimal": pa.decimal128(18, 2), "date": pa.date32(), "timestamp": pa.timestamp("us")}


@pytest.mark.parametrize("name", list(RAW_TABLES))
def test_schema_matches_contract(small, name: str) -> None:
    out, counts, _ = small
    schema = pq.read_schema(out / f"{name}.parquet")
    table = RAW_TABLES[name]
    assert schema.names == table.column_names
    assert [f.type for f in schema] == [ARROW[c.type] for c in table.columns]
    if table.declared_only:
        assert counts[name] == 0


@pytest.mark.parametrize("name", GENERATED)
def test_values_satisfy_contract(tables, name: str) -> None:
    df, table = tables[name], RAW_TABLES[name]
    end = pd.Timestamp(END)
    key = df[table.key]
    assert key.notna().all() and key.is_unique
    for col in table.columns:
        values = df[col.name]
        if not col.nullable:
            assert values.notna().all(), col.name
        present = values.dropna()
        if col.allowed is not None:
            assert set(present) <= set(col.allowed), col.name
        if col.pattern is not None:
            assert present.map(lambda v, p=re.compile(col.pattern): bool(p.match(v))).all(), \
                col.name
        if col.min_value is not None:
            assert (present >= col.min_value).all(), col.name
        if col.type == "timestamp":
            assert (present < end).all(), col.name
        if col.type == "date":
            assert (pd.to_datetime(present) < end).all(), col.name


def test_window_and_id_formats(tables) -> None:
    start = pd.Timestamp(END) - pd.Timedelta(days=SMALL.days)
    assert tables["orders"].ordered_at.min() >= start
    assert tables["behavior_events"].occurred_at.min() >= start
    reg = tables["customers"].registered_at
    assert reg.min() >= pd.Timestamp(END) - pd.Timedelta(days=3 * 365)
    assert tables["customers"].customer_id.str.fullmatch(r"M\d{8}").all()
    assert tables["products"].item_id.str.fullmatch(r"P\d{6}").all()
    assert tables["orders"].order_id.str.fullmatch(r"O\d+").all()
    assert tables["behavior_events"].event_id.str.fullmatch(r"E\d+").all()
    assert tables["identity_links"].link_id.str.fullmatch(r"L\d+").all()
    items = tables["order_items"]
    assert (items.order_item_id.str.rsplit("-", n=1).str[0] == items.order_id).all()


# --- realism -----------------------------------------------------------------------------------


def _paid_spend(tables) -> pd.Series:
    orders = tables["orders"]
    paid = orders[orders.status == "paid"]
    return (paid.groupby("customer_id").total_amount.sum()
            .reindex(tables["customers"].customer_id, fill_value=0.0))


def test_spend_is_concentrated(tables) -> None:
    spend = _paid_spend(tables).sort_values(ascending=False)
    top = spend.iloc[: len(spend) // 5].sum()
    assert top / spend.sum() > 0.55


def test_repeat_buyers(tables) -> None:
    orders = tables["orders"]
    per_buyer = orders[orders.status == "paid"].groupby("customer_id").size()
    assert (per_buyer >= 2).mean() >= 0.30


def test_order_mix(tables) -> None:
    orders, items = tables["orders"], tables["order_items"]
    status = orders.status.value_counts(normalize=True)
    assert status["paid"] > 0.9 and 0.005 < status["refunded"] < 0.08
    assert set(orders.channel) == {"app", "web", "mini_program", "store"}
    assert (items.quantity == 1).mean() > 0.7
    assert items.groupby("order_id").size().max() <= 4
    lines = items.groupby("order_id").amount.sum().reindex(orders.order_id)
    assert (lines - orders.set_index("order_id").total_amount).abs().max() < 0.011
    assert ((items.quantity * items.unit_price - items.amount).abs() < 0.011).all()


def test_funnel(tables) -> None:
    types = tables["behavior_events"].event_type.value_counts()
    assert types["view"] > 1.5 * types["add_to_cart"]
    assert types["add_to_cart"] > types["purchase"]
    assert set(types.index) == {"view", "favourite", "add_to_cart", "purchase", "login", "share"}


def test_explosive_identities(tables) -> None:
    links = tables["identity_links"]
    tablets = links[(links.left_id_type == "member_id") & (links.right_id_type == "imei")]
    assert tablets.groupby("right_id").left_id.nunique().max() >= 50
    test = links[(links.left_id_type == "email") & (links.left_id == "test@example.com")]
    assert test.right_id.nunique() >= 100
    assert (test.right_id_type == "mobile").all()


def test_link_pairs_and_duplicates(tables) -> None:
    links = tables["identity_links"]
    pairs = set(zip(links.left_id_type, links.right_id_type, strict=True))
    assert {("member_id", "openid"), ("openid", "unionid"), ("member_id", "oaid"),
            ("member_id", "idfa"), ("member_id", "imei"), ("email", "mobile")} <= pairs
    assert any(left in ("imei", "idfa", "oaid") and right == "mobile" for left, right in pairs)
    assert links.duplicated(["left_id_type", "left_id", "right_id_type", "right_id"]).any()


def test_dirty_values(tables) -> None:
    customers = tables["customers"]
    mobiles = customers.mobile.dropna()
    assert (~mobiles.str.fullmatch(r"1[3-9]\d{9}")).any()
    assert 0.05 < customers.mobile.isna().mean() < 0.12
    emails = customers.email.dropna()
    assert (emails != emails.str.lower()).any()
    assert (emails != emails.str.strip()).any()
    assert 0.6 < customers.email.notna().mean() < 0.8


def test_member_level_follows_spend(tables) -> None:
    customers = tables["customers"].assign(spend=_paid_spend(tables).to_numpy())
    means = customers.groupby("member_level").spend.mean()
    assert means["none"] < means["silver"] < means["gold"] < means["platinum"]


def test_peak_season(year_orders: pd.DataFrame) -> None:
    per_day = year_orders.groupby(year_orders.ordered_at.dt.date).size()
    months = pd.to_datetime(pd.Series(per_day.index)).dt.month.to_numpy()
    peak = per_day[(months == 11) | (months == 12)]
    assert peak.mean() > per_day.mean() * 1.2
    assert per_day.idxmax() == dt.date(2025, 11, 11)


# --- referential integrity ---------------------------------------------------------------------


def test_orders_and_items_reference(tables) -> None:
    customers, orders = tables["customers"], tables["orders"]
    items, products = tables["order_items"], tables["products"]
    assert orders.customer_id.isin(customers.customer_id).all()
    assert items.order_id.isin(orders.order_id).all()
    assert orders.order_id.isin(items.order_id).all()
    assert items.item_id.isin(products.item_id).all()
    reg = orders.merge(customers[["customer_id", "registered_at"]], on="customer_id")
    assert (reg.ordered_at >= reg.registered_at).all()


def test_events_reference(tables) -> None:
    events, products = tables["behavior_events"], tables["products"]
    with_item = events[events.item_id.notna()]
    assert with_item.item_id.isin(products.item_id).all()
    assert (events.item_id.notna() == (events.object_attribute == "product")).all()
    names = with_item.merge(products[["item_id", "name"]], on="item_id")
    assert (names.object_value == names.name).all()
    money = events.event_type.isin(["purchase", "add_to_cart"])
    assert events.amount[~money].isna().all() and events.amount[money].notna().all()
    members = events[events.user_id_type == "member_id"]
    assert members.user_id.isin(tables["customers"].customer_id).all()


def test_purchase_events_match_paid_lines(tables) -> None:
    orders, items, events = tables["orders"], tables["order_items"], tables["behavior_events"]
    lines = items.merge(orders[orders.status == "paid"], on="order_id")
    purchases = events[events.event_type == "purchase"]
    assert len(purchases) == len(lines)
    assert (purchases.user_id_type == "member_id").all()
    key = ["customer_id", "ordered_at", "channel", "item_id", "quantity", "amount"]
    expected = lines[key].sort_values(key).reset_index(drop=True)
    got = (purchases.rename(columns={"user_id": "customer_id", "occurred_at": "ordered_at",
                                     "event_count": "quantity"})[key]
           .sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_event_keys_and_links(tables) -> None:
    events, links = tables["behavior_events"], tables["identity_links"]
    linked = set(links.left_id) | set(links.right_id)
    devices = events[events.user_id_type.isin(["imei", "idfa", "oaid"])]
    assert (devices.channel == "app").all()
    in_links = devices.user_id.isin(linked)
    assert in_links.any() and (~in_links).any()  # the user's devices, and anonymous ones
    app = events[events.channel == "app"]
    assert 0.05 < app.user_id.isin(devices.user_id[in_links]).mean() < 0.2
    openids = events[events.user_id_type == "openid"]
    assert len(openids) > 0 and openids.user_id.isin(links.right_id).all()
    assert (openids.channel == "mini_program").all()
