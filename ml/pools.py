"""Product pools: the candidate products of a recommendation, a condition over
`marts.product_tags` written in YAML (one file per pool in `ml/pools/`) in the condition language
of audiences (docs/conditions.md):

    name: skincare_and_beauty
    description: What the spring campaign may recommend.
    any:                                   # any (union) or all (intersection), or one tag
      - tag: {name: category, in: [skincare, beauty]}
      - all:
          - tag: {name: category, in: [snacks]}
          - tag: {name: price, ">=": 30}

Each tag is one of seeds/product_tag_catalogue.csv (or `item_id`, the product itself, an enum)
with an operator of its type: enum `in` / `not_in`; text `equals`, `contains`, ...; numeric
`=` ... `between`; date `=` ... `between`, `last_days` (up to the day the pool is read); all
`is_null` / `is_not_null`. Conditions nest with `all:`, `any:` and `not:`. The flat form of
earlier releases, `{tag: category, in: [...]}`, is still read, with a deprecation message.
Errors name the file, the line and the field.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from sqlglot import exp

from openaudience.conditions import (
    ConditionNode,
    Context,
    Strict,
    check_condition,
    compile_condition,
    condition_model,
    modernize,
    reporter,
    to_sql,
    validate_rewritten,
)
from openaudience.conditions.sql import col
from openaudience.core.schema.operational import POOL_ITEMS
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import FileErrors, Problem, read_yaml

POOL_DIR = PROJECT_ROOT / "ml" / "pools"
CATALOGUE = PROJECT_ROOT / "seeds" / "product_tag_catalogue.csv"

PoolCondition = condition_model("PoolCondition", "product pools", ("tag",),
                                "Exactly one of: all, any, not, tag (a product tag).")


class PoolErrors(FileErrors):
    """Problems in pool files, each with its file and line."""


class Pool(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    where: PoolCondition


@dataclass(frozen=True)
class TagInfo:
    name: str
    tag_type: str
    is_statistic: bool


def product_tags(path: Path = CATALOGUE) -> dict[str, TagInfo]:
    """The catalogue's tags, and the product id itself (an enum: in / not_in)."""
    with path.open(newline="", encoding="utf-8") as f:
        tags = {r["tag_name"]: TagInfo(r["tag_name"], r["tag_type"], r["is_statistic"] == "true")
                for r in csv.DictReader(f)}
    return {"item_id": TagInfo("item_id", "enum", False), **tags}


@dataclass(frozen=True)
class _Env:
    """What a pool's tags are checked against."""

    tags: dict[str, str]
    tag_noun: str = "product tag"


@dataclass(frozen=True)
class CompiledPool:
    name: str
    description: str
    condition: ConditionNode
    query: exp.Select  # select item_id from marts.product_tags where ...
    path: Path

    def sql(self, dialect: str) -> str:
        return to_sql(self.query, dialect, pretty=False)


def pool_query(condition: ConditionNode, tag_types: dict[str, str], schema: str = "marts") -> exp.Select:
    """The products meeting the condition; a date window (last_days) ends on the current date."""
    ctx = Context(today=exp.CurrentDate(), tag_types=tag_types, tag_table="p")
    where = compile_condition(condition, ctx)
    table = exp.alias_(exp.table_("product_tags", db=schema, quoted=True), "p", table=True)
    return exp.select(col("item_id", "p")).from_(table).where(where).order_by(col("item_id", "p"))


def load_pools(folder: Path = POOL_DIR, catalogue: Path = CATALOGUE) -> dict[str, CompiledPool]:
    """Every pool of `folder`, compiled; PoolErrors lists every problem of every file."""
    tag_types = {name: info.tag_type for name, info in product_tags(catalogue).items()}
    problems: list[Problem] = []
    pools: dict[str, CompiledPool] = {}
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        try:
            pool, rewritten, lines = _read(path)
        except PoolErrors as exc:
            problems.extend(exc.problems)
            continue
        report = reporter(path, lines, problems, rewritten)
        if path.stem != pool.name:
            report(("name",), f"the file is {path.name}; name it {pool.name}.yml or the pool {path.stem}")
        found = len(problems)
        check_condition(pool.where, ("where",), _Env(tag_types), report)
        if len(problems) == found:
            pools[pool.name] = CompiledPool(pool.name, pool.description, pool.where,
                                            pool_query(pool.where, tag_types), path)
    if problems:
        raise PoolErrors(problems)
    return pools


def _read(path: Path):
    """The pool of one file: its name and description, and the rest of it is the condition."""
    data, lines = read_yaml(path, PoolErrors, "a mapping with name and a condition (any:, all:, ...)")
    body = {k: v for k, v in data.items() if k not in ("name", "description")}
    if not body:
        raise PoolErrors([Problem(path, 1, "", "a pool needs its condition: any: [...], all: [...] or "
                                               "one tag: {name: ..., <operator>: ...}")])
    rewritten = modernize(body, ("where",), written_at=())
    pool_data = {k: data[k] for k in ("name", "description") if k in data} | {"where": rewritten.data}
    return validate_rewritten(Pool, pool_data, path, lines, [rewritten], PoolErrors), [rewritten], lines


def pool_items(wh, pool: CompiledPool) -> list[str]:
    return [r[0] for r in wh.query(pool.sql(wh.engine))]


def write_pool_items(wh, pools: dict[str, CompiledPool]) -> dict[str, int]:
    """ml.pool_items (pool, item_id): every pool's products now, for audiences that ask for
    people recommended a product of a pool; replaced whole, in one transaction."""
    import pyarrow as pa

    rows = {name: pool_items(wh, pool) for name, pool in pools.items()}
    table = pa.table({"pool": pa.array([n for n, items in rows.items() for _ in items], pa.string()),
                      "item_id": pa.array([i for items in rows.values() for i in items], pa.string())})
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.empty_table(conn, POOL_ITEMS.relation)
        wh.insert_arrow(conn, POOL_ITEMS.relation, table)
    return {n: len(items) for n, items in rows.items()}
