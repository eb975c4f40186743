"""The condition language (openaudience.conditions): one registry of kinds, one set of tag
operators, one compiler whose "today" is a date or a column, domains that allow some kinds, and
old spellings read with a message naming the file and the line."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from ml.pools import PoolErrors, load_pools, pool_query, product_tags
from openaudience.conditions import (
    DEPRECATED_OPS,
    LEAVES,
    OPS_BY_TYPE,
    Context,
    Leaf,
    compile_condition,
    condition_model,
    describe,
    modernize,
    to_sql,
)
from openaudience.conditions.sql import col
from openaudience.segments import spec
from openaudience.segments.compiler import describe as audience_describe

TAG_TYPES = {"city": "enum", "note": "text", "spend": "numeric", "joined": "date", "apps": "multi_value"}
Tags = condition_model("Tags", "tests", ("tag",), "Tags only.")


def test_every_kind_is_one_registered_class_and_audiences_allow_all_of_them():
    assert set(LEAVES) >= {"tag", "behavior", "rfm", "aipl", "audience", "upload", "table", "score",
                           "recommended"}
    for kind, cls in LEAVES.items():
        assert issubclass(cls, Leaf) and cls.kind == kind
        for method in ("compile", "describe"):  # each kind owns its SQL and its sentence
            assert getattr(cls, method) is not getattr(Leaf, method), (kind, method)
    assert spec.Condition.kinds == spec.AUDIENCE_KINDS and set(spec.AUDIENCE_KINDS) <= set(LEAVES)
    assert audience_describe is describe
    with pytest.raises(TypeError, match="defined twice"):
        type("Again", (Leaf,), {"__annotations__": {}, "kind": "tag"})


def test_the_operators_are_one_table_with_the_old_spellings_mapped_to_it():
    assert OPS_BY_TYPE["date"][:6] == ("=", "!=", ">", ">=", "<", "<=")
    assert DEPRECATED_OPS == {"not_null": "is_not_null", "within_last_days": "last_days"}
    assert all("is_not_null" in ops for ops in OPS_BY_TYPE.values())
    assert "last_days" in OPS_BY_TYPE["date"]


def test_a_kind_a_domain_does_not_allow_is_refused_by_name():
    with pytest.raises(ValueError, match="behavior conditions are not allowed in tests; the kinds allowed "
                                         "are all, any, not, tag"):
        Tags.model_validate({"any": [{"behavior": {"did": "view", "last_days": 3}}]})
    with pytest.raises(ValueError, match="'tagg' is not a kind of condition; the kinds allowed in tests "
                                         "are all, any, not, tag"):
        Tags.model_validate({"tagg": {"name": "city", "in": ["a"]}})


def _rows(condition: dict, today, rows: list[tuple]) -> list[int]:
    """Which of `rows` (id, city, note, spend, joined) the condition selects, on DuckDB."""
    cond = Tags.model_validate(condition)
    ctx = Context(today=today, tag_types=TAG_TYPES)
    where = compile_condition(cond, ctx)
    con = duckdb.connect()
    con.execute("create table t (id int, city text, note text, spend decimal(18,2), joined date, "
                "apps text)")
    con.executemany("insert into t values (?, ?, ?, ?, ?, ?)", rows)
    query = exp.select(col("id")).from_(exp.alias_(exp.to_table("t"), "t", table=True)).where(where)
    return sorted(r[0] for r in con.execute(to_sql(query.order_by(col("id")), "duckdb")).fetchall())


ROWS = [(1, "Shanghai", "100%_off", 5, dt.date(2026, 6, 30), "app,web"),
        (2, None, "100 percent off", None, dt.date(2026, 6, 1), None),
        (3, "Beijing", "x_y", 200, None, "web")]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"tag": {"name": "note", "contains": "%"}}, [1]),          # by position: % and _ are plain
    ({"tag": {"name": "note", "contains": "_"}}, [1, 3]),
    ({"tag": {"name": "note", "not_contains": "%"}}, [2, 3]),
    ({"tag": {"name": "city", "not_in": ["Shanghai"]}}, [2, 3]),  # a missing value is not in
    ({"not": {"tag": {"name": "spend", ">": 10}}}, [1, 2]),       # never NULL, so not is the complement
    ({"tag": {"name": "spend", "between": [5, 200]}}, [1, 3]),
    ({"tag": {"name": "joined", ">=": "2026-06-15"}}, [1]),       # dates compare as dates
    ({"tag": {"name": "joined", "last_days": 30}}, [1, 2]),       # (06-01, 06-30]
    ({"tag": {"name": "joined", "last_days": 29}}, [1]),
    ({"tag": {"name": "joined", "is_null": True}}, [3]),
    ({"tag": {"name": "apps", "contains_any": ["app"]}}, [1]),
    ({"any": [{"tag": {"name": "city", "in": ["Beijing"]}}, {"tag": {"name": "spend", "<": 6}}]}, [1, 3]),
])
def test_today_is_a_date_or_a_column_and_both_select_the_same(condition, expected):
    today = dt.date(2026, 6, 30)
    assert _rows(condition, today, ROWS) == expected
    # the same condition with today as a column (AIPL's stat date) selects the same rows
    assert _rows(condition, exp.cast(exp.Literal.string("2026-06-30"), "DATE"), ROWS) == expected


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "spark"])
def test_date_arithmetic_on_a_column_generates_for_every_engine(dialect):
    cond = Tags.model_validate({"all": [{"tag": {"name": "joined", "last_days": 180}},
                                        {"tag": {"name": "joined", "this_month": True}},
                                        {"tag": {"name": "joined", "before_days_ago": 7}}]})
    ctx = Context(today=exp.column("stat_date", table="d"), tag_types=TAG_TYPES)
    sql = to_sql(compile_condition(cond, ctx), dialect)
    assert "stat_date" in sql and "180" in sql and "2026" not in sql
    sqlglot.parse_one(sql, read=dialect)


def test_values_enter_the_sql_as_literals_only():
    hostile = "x'); drop table t; --"
    cond = Tags.model_validate({"tag": {"name": "note", "equals": [hostile]}})
    ctx = Context(today=dt.date(2026, 6, 30), tag_types=TAG_TYPES)
    sql = to_sql(compile_condition(cond, ctx), "postgres")
    assert "'x''); drop table t; --'" in sql
    assert _rows({"tag": {"name": "note", "equals": [hostile]}}, dt.date(2026, 6, 30),
                 [(1, None, hostile, None, None, None), (2, None, "x", None, None, None)]) == [1]


# -- deprecations -----------------------------------------------------------------------------
def test_old_spellings_are_rewritten_with_where_they_were():
    old = [{"behavior": {"event_type": "login", "last_days": 90}},
           {"or": {"tag": {"name": "joined", "within_last_days": 180}}},
           {"or": {"tag": "city", "in": ["Shanghai"]}},
           {"and": {"tag": {"name": "city", "not_null": True}}}]
    r = modernize(old, ("stages", "awareness"), lists=True)
    assert r.data == {"all": [
        {"any": [{"behavior": {"did": "login", "last_days": 90}},
                 {"tag": {"name": "joined", "last_days": 180}},
                 {"tag": {"name": "city", "in": ["Shanghai"]}}]},
        {"tag": {"name": "city", "is_not_null": True}}]}
    # an error found in the rewritten tree is reported where the person wrote it
    assert r.written(("stages", "awareness", "all", 0, "any", 1, "tag", "last_days")) == \
        ("stages", "awareness", 1, "or", "tag", "within_last_days")
    assert r.written(("stages", "awareness", "all", 0, "any", 2, "tag", "in")) == \
        ("stages", "awareness", 2, "or", "in")
    assert r.written(("stages", "awareness", "all", 1, "tag", "is_not_null")) == \
        ("stages", "awareness", 3, "and", "tag", "not_null")
    assert [loc for loc, _ in r.notes] == [
        ("stages", "awareness"), ("stages", "awareness", 0, "behavior", "event_type"),
        ("stages", "awareness", 1, "or", "tag", "within_last_days"), ("stages", "awareness", 2, "or"),
        ("stages", "awareness", 3, "and", "tag", "not_null")]
    assert modernize(old, ("where",)).data == old  # a list is a condition only in the AIPL rules


def test_the_current_spelling_is_left_as_it_is():
    new = {"all": [{"any": [{"tag": {"name": "city", "in": ["a"]}}]},
                   {"not": {"tag": {"name": "x", "=": 1}}}]}
    r = modernize(new, ("where",), lists=True)
    assert r.data == new and r.notes == [] and r.places == {}


def test_an_old_pool_spelling_is_read_with_a_message_naming_file_line_and_new_spelling(tmp_path, caplog):
    (tmp_path / "old.yml").write_text("name: old\nany:\n  - {tag: category, in: [skincare]}\n"
                                      "  - {tag: price, \">=\": 30}\n")
    (tmp_path / "new.yml").write_text("name: new\nany:\n  - tag: {name: category, in: [skincare]}\n"
                                      "  - tag: {name: price, \">=\": 30}\n")
    with caplog.at_level(logging.WARNING, logger="openaudience.conditions"):
        pools = load_pools(tmp_path)
    assert pools["old"].sql("duckdb") == pools["new"].sql("duckdb")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"{tmp_path}/old.yml:3: any[0]: deprecated: write this tag condition as {{tag: {{name: category, "
        "in: ...}}; {tag: category, in: ...} is the old spelling",
        f"{tmp_path}/old.yml:4: any[1]: deprecated: write this tag condition as {{tag: {{name: price, "
        ">=: ...}}; {tag: price, >=: ...} is the old spelling"]


def test_the_shipped_pools_are_written_in_the_current_spelling(caplog):
    with caplog.at_level(logging.WARNING, logger="openaudience.conditions"):
        pools = load_pools()
    assert caplog.records == []
    assert set(pools) >= {"skincare_and_beauty", "skincare_only", "flagship_product"}


def test_a_pool_is_one_query_with_literals_and_no_like():
    tags = {n: i.tag_type for n, i in product_tags().items()}
    cond = load_pools()["skincare_and_beauty"].condition
    for dialect in ("duckdb", "postgres"):
        sql = to_sql(pool_query(cond, tags), dialect)
        assert "LIKE" not in sql.upper() and "%s" not in sql
        sqlglot.parse_one(sql, read=dialect)


def test_a_pool_date_window_ends_today(tmp_path):
    (tmp_path / "p.yml").write_text("name: p\ntag: {name: listed_at, last_days: 30}\n")
    sql = load_pools(tmp_path)["p"].sql("postgres")
    assert "CURRENT_DATE" in sql and "INTERVAL '30 DAY'" in sql


def test_an_audience_reads_the_old_spellings_too(tmp_path, caplog):
    from openaudience.segments.source import load_audience
    from tests.test_segments import CATALOG

    path = tmp_path / "a.yml"
    path.write_text("name: a\nwhere:\n  all:\n    - tag: {name: city, in: [Shanghai]}\n"
                    "    - tag: {name: mobile, not_null: true}\n")
    with caplog.at_level(logging.WARNING, logger="openaudience.conditions"):
        audience = load_audience(path, CATALOG)
    assert audience.where.all[1].tag.op == "is_not_null"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:5: where.all[1].tag.not_null: deprecated: write is_not_null; not_null is the old spelling"]
    path.write_text("name: a\nwhere:\n  tag: {name: mobile, not_null: maybe}\n")
    with pytest.raises(Exception) as info:
        load_audience(path, CATALOG)
    assert f"{path}:3: where.tag.not_null: is_not_null takes no value (write is_not_null: true)" \
        in str(info.value)


def test_pool_errors_of_kinds_and_values(tmp_path):
    (tmp_path / "p.yml").write_text("name: p\nall:\n  - tag: {name: category, in: [a]}\n"
                                    "  - rfm: {model: rfm_default, segments: [x]}\n")
    with pytest.raises(PoolErrors) as info:
        load_pools(tmp_path)
    assert str(info.value) == (f"{tmp_path}/p.yml:4: all[1]: rfm conditions are not allowed in product "
                               "pools; the kinds allowed are all, any, not, tag")
    Path(tmp_path / "p.yml").write_text("name: p\nnot:\n  tag: {name: item_id, contains: P0}\n")
    with pytest.raises(PoolErrors) as info:
        load_pools(tmp_path)
    assert "p.yml:3: not.tag.contains: operator 'contains' does not apply to enum tag 'item_id'" \
        in str(info.value)
