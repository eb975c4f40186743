"""Product pools: the candidate products of a recommendation, a filter over `marts.product_tags`
written in YAML (one file per pool in `ml/pools/`), validated like segments:

    name: skincare_and_beauty
    description: What the spring campaign may recommend.
    any:                                   # any (union, the manual's default) or all
      - {tag: category, in: [skincare, beauty]}
      - all:
          - {tag: category, in: [snacks]}
          - {tag: price, ">=": 30}

Each condition is one tag of seeds/product_tag_catalogue.csv (or `item_id`, the product itself)
and one operator that fits its type: enum `in` / `not_in`; text `equals` / `contains`; numeric
and date `=`, `!=`, `>`, `>=`, `<`, `<=`. Conditions nest with `all:` and `any:`. Errors name
the file, the line and the field.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from openaudience.core.schema.operational import POOL_ITEMS
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.sql import qident
from openaudience.core.yaml_files import (
    FileErrors,
    Problem,
    as_date,
    field_of,
    line_of,
    read_yaml,
    suggest,
    validate_model,
)

POOL_DIR = PROJECT_ROOT / "ml" / "pools"
CATALOGUE = PROJECT_ROOT / "seeds" / "product_tag_catalogue.csv"
OPS = {"enum": ("in", "not_in"), "text": ("equals", "contains"),
       "numeric": ("=", "!=", ">", ">=", "<", "<="), "date": ("=", "!=", ">", ">=", "<", "<=")}
SQL_OPS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class PoolErrors(FileErrors):
    """Problems in pool files, each with its file and line."""


class Node(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    tag: str | None = None
    all: list[Node] | None = None
    any: list[Node] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Node:
        groups = [g for g in (self.all, self.any) if g is not None]
        if self.tag is None and len(groups) != 1:
            raise ValueError("a condition is {tag: ..., <operator>: value}, or a group all: [...] "
                             "or any: [...]")
        if self.tag is not None and groups:
            raise ValueError("a condition has a tag or a group (all:/any:), not both")
        if any(g == [] for g in groups):
            raise ValueError("a group needs at least one condition")
        if self.tag is not None and len(self.model_extra or {}) != 1:
            raise ValueError(f"tag {self.tag!r} needs exactly one operator, e.g. in: [..] or \">=\": 100")
        return self


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    all: list[Node] | None = None
    any: list[Node] | None = None

    @model_validator(mode="after")
    def _one(self) -> Pool:
        if (self.all is None) == (self.any is None):
            raise ValueError("give the conditions under any: (union) or all: (intersection), one of them")
        return self


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
class CompiledPool:
    name: str
    description: str
    sql: str           # select item_id from marts.product_tags where ...
    params: list[Any]
    path: Path


def _compile(node: Node, loc: tuple, tags: dict[str, TagInfo], report, params: list) -> str:
    if node.tag is None:
        joiner, items, key = (" and ", node.all, "all") if node.all is not None else (" or ", node.any, "any")
        parts = [_compile(child, (*loc, key, i), tags, report, params) for i, child in enumerate(items)]
        return "(" + joiner.join(parts) + ")"
    info = tags.get(node.tag)
    if info is None:
        report((*loc, "tag"), f"unknown product tag {node.tag!r}{suggest(node.tag, tags)}")
        return "false"
    [(op, value)] = node.model_extra.items()
    allowed = OPS.get(info.tag_type, ())
    if op not in allowed:
        report((*loc, op), f"{node.tag} is a {info.tag_type} tag; its operators are {', '.join(allowed)}")
        return "false"
    column = f"p.{qident(node.tag)}"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            report((*loc, op), f"{op} takes a list of values, e.g. [skincare, beauty]")
            return "false"
        params.extend(str(v) for v in value)
        marks = ", ".join(["%s"] * len(value))
        return f"{column} in ({marks})" if op == "in" else f"({column} is null or {column} not in ({marks}))"
    if op in ("equals", "contains"):
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            report((*loc, op), f"{op} takes one value")
            return "false"
        params.append(str(value) if op == "equals" else f"%{value}%")
        return f"{column} = %s" if op == "equals" else f"{column} like %s"
    if info.tag_type == "numeric" and not _is_number(value):
        report((*loc, op), f"{node.tag} is numeric; {op} takes a number")
        return "false"
    if info.tag_type == "date":
        day = as_date(value)
        if day is None:  # checked here: the warehouse's cast would fail at the first query
            report((*loc, op), f"{node.tag} is a date; {op} takes a date written YYYY-MM-DD, not {value!r}")
            return "false"
        params.append(day.isoformat())
        return f"cast({column} as date) {SQL_OPS[op]} cast(%s as date)"
    params.append(value)
    return f"{column} {SQL_OPS[op]} %s"


def _is_number(value: Any) -> bool:
    """A finite number (not a boolean): infinity would reach the SQL as a parameter it cannot compare."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_pools(folder: Path = POOL_DIR, catalogue: Path = CATALOGUE) -> dict[str, CompiledPool]:
    """Every pool of `folder`, compiled; PoolErrors lists every problem of every file."""
    tags = product_tags(catalogue)
    problems: list[Problem] = []
    pools: dict[str, CompiledPool] = {}
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        try:
            data, lines = read_yaml(path, PoolErrors, "a mapping with name and any: or all:")
            pool = validate_model(Pool, data, path, lines, PoolErrors)
        except PoolErrors as exc:
            problems.extend(exc.problems)
            continue

        def report(loc, message, path=path, lines=lines):
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))

        if path.stem != pool.name:
            report(("name",), f"the file is {path.name}; name it {pool.name}.yml or the pool {path.stem}")
        params: list = []
        key = "all" if pool.all is not None else "any"
        where = _compile(Node.model_validate({key: getattr(pool, key)}), (), tags, report, params)
        where = where[1:-1] if where.startswith("(") else where
        pools[pool.name] = CompiledPool(pool.name, pool.description,
                                        f"select p.item_id from marts.product_tags p where {where}",
                                        params, path)
    if problems:
        raise PoolErrors(problems)
    return pools


def pool_items(wh, pool: CompiledPool) -> list[str]:
    return [r[0] for r in wh.query(pool.sql + " order by p.item_id", pool.params)]


def write_pool_items(wh, pools: dict[str, CompiledPool]) -> dict[str, int]:
    """ml.pool_items (pool, item_id): every pool's products now, for audiences that ask for
    people recommended a product of a pool; replaced whole, in one transaction."""
    import pyarrow as pa

    rows = {name: pool_items(wh, pool) for name, pool in pools.items()}
    table = pa.table({"pool": pa.array([n for n, items in rows.items() for _ in items], pa.string()),
                      "item_id": pa.array([i for items in rows.values() for i in items], pa.string())})
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.execute(conn, f"delete from {POOL_ITEMS.relation}")
        wh.insert_arrow(conn, POOL_ITEMS.relation, table)
    return {n: len(items) for n, items in rows.items()}
