"""One id-type registry (seeds/id_types.csv) read by SQL and Python, and one normalisation in
both: the SQL macro (`normalize_by_rule`, compiled by dbt for each engine) and Python's
`connectors.identifiers.normalise` must agree on every value of a hostile corpus (SQL's NULL is
Python's IdError), or a hashed id sent to a platform would not be the id the warehouse matched."""

from __future__ import annotations

import csv
import random

import pytest

from connectors.identifiers import (
    REGISTRY_FILE,
    RULES,
    IdError,
    RegistryError,
    audience_id_types,
    id_types,
    normalise,
    registry,
)
from openaudience.core.schema.raw import ID_TYPES as RAW_ID_TYPES
from openaudience.segments.spec import ID_TYPES as AUDIENCE_ID_TYPES

SPACES = [" ", "\t", "\n", "\r", "\v", "\f", "\u00a0", "\u3000", "\u2003", "\u200b", "\ufeff"]
VALUES = [
    "", " ", "\t\n", "\u3000", "\u00a0\u00a0", "abc", " abc ", "\tABC\n", "\u3000Abc\u00a0", "a b c",
    "ÄÖÜ", "äBç", "İstanbul", "ß", "ǅ", "Straße@Example.COM", " Ann@Example.COM ", "ann@", "@",
    "no-at.example",
    "a@b", "A@B\u3000", "\u00a0x@y.cn\t", "ＡＢＣ@ＥＸ.ＣＮ", "user+tag@Mail.Example.org",
    "13800138000", " 13800138000 ", "+86 138-0013 8000", "8613800138000", "86 13800138000", "+8613800138000",
    "008613800138000", "12345", "23800138000", "1380013800", "138001380001", "１３８００１３８０００",
    "138\u00a00013\u30008000", "(+86) 138 0013 8000 ext", "86138001380000", "861380013800", "８６13800138000",
    "6D0F2F3A-7A2B-4C1D-9E8F-0A1B2C3D4E5F", " 6d0f2f3a-7a2b-4c1d-9e8f-0a1b2c3d4e5f ", "AA:BB:CC:DD:EE:FF",
    "a0:b1:C2:d3:E4:f5", "35-209900-176148-1", "A0000012345678", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
    "'; drop table x; --", "\"quoted\"", "back\\slash", "per%cent_", "emoji😀id", "مرحبا", "\u202eRTL",
    "e\u0301", "x" * 300, "  " + "Y" * 50 + "  ", "\u200bzero-width\u200b", "\ufeffbom",
]


def corpus() -> list[tuple[str, str]]:
    """Every id type (and one the registry lacks) with every value, and seeded random strings
    over a hostile alphabet."""
    rng = random.Random(20261202)
    alphabet = "aZ09 @+-._\t\u3000\u00a0８Ä" + "".join(SPACES)
    extra = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(150)]
    extra += ["".join(rng.choice("0123456789 +-86") for _ in range(rng.randint(9, 16))) for _ in range(150)]
    return [(t, v) for t in (*id_types(), "not_registered") for v in VALUES + extra]


def python_side(rows: list[tuple[str, str]]) -> list[str | None]:
    out = []
    for id_type, value in rows:
        try:
            out.append(normalise(id_type, value))
        except IdError:
            out.append(None)
    return out


def compiled_expression(target) -> str:
    """normalize_by_rule as dbt compiles it for this engine (regexes are adapter-dispatched)."""
    target.settings.home.mkdir(parents=True, exist_ok=True)
    done = target.dbt("--quiet", "compile", "--inline",
                      "select {{ normalize_by_rule('c.rule', 'c.value') }} as normalised "
                      "from corpus as c order by c.k", as_of=None, in_process=False)
    sql = done.stdout.strip()
    assert sql.lower().startswith("select case c.rule"), sql[:500]
    return sql


def sql_side(target, rows: list[tuple[str, str]]) -> list[str | None]:
    rules = {name: t.normalisation for name, t in registry().items()}
    query = compiled_expression(target)  # before we open the warehouse: dbt opens it too
    wh = target.warehouse
    with wh.connect() as conn:
        wh.execute(conn, "create table corpus (k integer, rule text, value text)")
        for k, (id_type, value) in enumerate(rows):
            wh.execute(conn, "insert into corpus values (%s, %s, %s)", [k, rules.get(id_type), value])
        return [r[0] for r in wh.execute(conn, query)]


@pytest.mark.slow  # dbt compiles the macro for each engine
def test_sql_and_python_normalise_every_id_alike(target):
    rows = corpus()
    python, sql = python_side(rows), sql_side(target, rows)
    differ = [(id_type, value, p, s)
              for (id_type, value), p, s in zip(rows, python, sql, strict=True) if p != s]
    assert not differ, "\n".join(f"{t} {v!r}: python {p!r}, {target.name} {s!r}"
                                  for t, v, p, s in differ[:20])
    assert sum(v is None for v in python) > 100  # both kinds are met
    assert sum(v is not None for v in python) > 1000


def test_uploaded_id_lists_normalise_as_the_warehouse():
    from openaudience.segments.uploads import normalize_id

    rows = corpus()
    assert [normalize_id(t, v) for t, v in rows] == python_side(rows)


def test_the_registry_is_the_one_list_of_id_types():
    with open(REGISTRY_FILE, newline="", encoding="utf-8") as f:
        seed = list(csv.DictReader(f))
    assert RAW_ID_TYPES == tuple(r["id_type"] for r in seed) == id_types()
    assert AUDIENCE_ID_TYPES == tuple(r["id_type"] for r in seed if r["in_audiences"] == "true") \
        == audience_id_types()
    assert {r["normalisation"] for r in seed} <= set(RULES)
    assert {"one_id", "mobile", "email"} <= set(AUDIENCE_ID_TYPES)


def test_the_rules_do_what_the_registry_says():
    assert normalise("mobile", "+86 138-0013 8000") == "13800138000"
    assert normalise("email", "\u3000Ann@Example.COM\t") == "ann@example.com"
    assert normalise("idfa", " 6d0f-ab ") == "6D0F-AB"
    assert normalise("imei", "A0000012345678") == "a0000012345678"  # an MEID's hex digits
    assert normalise("member_id", " M9 ") == "M9"  # case is kept where it may mean something
    assert normalise("email", "ÄB@X.CN") == "Äb@x.cn"  # ASCII letters only, as SQL's translate
    for id_type, value in (("email", "no-at"), ("mobile", "１３８００１３８０００"), ("openid", "\u3000 ")):
        with pytest.raises(IdError):
            normalise(id_type, value)


@pytest.mark.parametrize("row, message", [
    ("alias,Alias,false,true,3,phone,true,x", "normalisation 'phone' of alias is not one of trim, "),
    ("alias,Alias,maybe,true,3,mobile_cn,true,x", "is_device must be true or false, not 'maybe'"),
    ("one_id,OneID,false,false,1,trim,true,again", "id_type 'one_id' is empty or repeated"),
    ("alias ,Alias,false,true,3,trim,true,x", "id_type 'alias ' has white space around it"),
    ("alias,Alias,false,true,3, lower,true,x", "normalisation ' lower' has white space around it"),
])
def test_a_malformed_registry_is_refused_with_its_line(tmp_path, row, message):
    path = tmp_path / "id_types.csv"
    lines = REGISTRY_FILE.read_text().splitlines()
    path.write_text("\n".join([*lines, row]) + "\n")
    with pytest.raises(RegistryError, match=f"{path}:{len(lines) + 1}: .*{message[:30]}"):
        registry(path)


def test_every_audience_id_type_is_a_column_of_user_tags():
    """An id type marked in_audiences must be one of user_tags' id columns (pivoted in
    int_users_ids_pivoted), or audiences on it would validate and then fail to build."""
    import json

    from openaudience.core.dbt import ensure_manifest

    nodes = json.loads(ensure_manifest().read_text())["nodes"]
    columns = set(nodes["model.openaudience.user_tags"]["columns"])
    pivoted = (REGISTRY_FILE.parents[1] / "models/intermediate/users/int_users_ids_pivoted.sql").read_text()
    for id_type in audience_id_types():
        assert id_type in columns, f"user_tags has no column {id_type}: add it, or set in_audiences false"
        if id_type != "one_id":
            assert f"id_type = '{id_type}'" in pivoted, id_type
