"""The AIPL rules (meta.aipl of the dbt model aipl_daily, models/marts/aipl/_aipl__models.yml)
in the condition language, compiled into dbt macros.

dbt cannot call Python, so `oa aipl compile` compiles each model's four stage conditions into
SQL for every engine and writes them to macros/aipl/_aipl_rules.sql; the model's macro
(macros/aipl/aipl_daily.sql) builds the days, the behaviour windows and the precedence around
them. The generated file carries a hash of the rules it was made from, and the model refuses to
compile when the rules in the YAML no longer have that hash.

Semantics: a behaviour leaf sums the N days ending on the stat date, inclusive (`last_days`,
required; count defaults to >= 1); tag leaves read the current user_tags, except date windows
(`last_days`, `this_week`, ...), which are relative to the stat date. A user meeting several
stages on a day takes the highest: L > P > I > A.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from sqlglot import exp

from openaudience.conditions.context import Context
from openaudience.conditions.deprecations import modernize
from openaudience.conditions.files import reporter, validate_rewritten
from openaudience.conditions.leaves import BehaviorLeaf, Strict
from openaudience.conditions.sql import col, to_sql
from openaudience.conditions.tree import ConditionNode, check_condition, compile_condition, condition_model
from openaudience.core.event_codes import event_codes
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import FileErrors, Problem, field_of, read_yaml

RULES_FILE = Path("models/marts/aipl/_aipl__models.yml")
MACRO_FILE = Path("macros/aipl/_aipl_rules.sql")
MODEL = "aipl_daily"
ENGINES = ("duckdb", "postgres", "spark")
STAGES = (("L", "loyalty"), ("P", "purchase"), ("I", "interest"), ("A", "awareness"))
"""Stage codes and names, highest first: the precedence."""
UNSUPPORTED = f"the AIPL rules are compiled for {', '.join(ENGINES)} only; add the engine to ENGINES"

AiplCondition = condition_model("AiplCondition", "AIPL rules", ("tag", "behavior"),
                                "Exactly one of: all, any, not, tag, behavior.")


class AiplErrors(FileErrors):
    """Problems in the AIPL rules, each with its file and line."""


class AiplStages(Strict):
    awareness: AiplCondition
    interest: AiplCondition
    purchase: AiplCondition
    loyalty: AiplCondition


class AiplModel(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    description: str = ""
    stages: AiplStages


class AiplRules(Strict):
    models: list[AiplModel] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[AiplModel]) -> list[AiplModel]:
        names = [m.name for m in models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two AIPL models are named {twice[0]!r}")
        return models


@dataclass
class _Env:
    """What AIPL rules are checked against: the user tags and the behaviour seeds."""

    tags: dict[str, str]
    delimiters: dict[str, str]
    event_types: set[str]
    channels: set[str]

    @classmethod
    def from_project(cls, root: Path) -> _Env:
        def rows(name: str) -> list[dict[str, str]]:
            with (root / "seeds" / name).open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))

        tags = rows("tag_catalogue.csv")
        # the id columns of user_tags filter like text tags, as in audiences ("has a mobile")
        ids = {r["id_type"]: "text" for r in rows("id_types.csv")
               if r["in_audiences"] == "true" and r["id_type"] != "one_id"}
        return cls(tags={**ids, **{r["tag_name"]: r["tag_type"] for r in tags}},
                   delimiters={r["tag_name"]: r["delimiter"] for r in tags
                               if r["tag_type"] == "multi_value" and r["delimiter"]},
                   event_types=({r["event_type"] for r in rows("dim_behavior_types.csv")}
                                | event_codes(root / "events")),
                   channels={r["channel"] for r in rows("dim_channels.csv")})


@dataclass
class _AiplContext(Context):
    """Today is each day's stat date (`d.stat_date`); a behaviour leaf reads its window's count
    and amount from the model's windowed CTE (`w.c<k>`, `w.a<k>`), one column pair per distinct
    behaviour and window."""

    behaviors: dict[tuple[str, int], int] = field(default_factory=dict)
    leaves: list[BehaviorLeaf] = field(default_factory=list)

    def behavior_totals(self, leaf: BehaviorLeaf) -> tuple[exp.Expression, exp.Expression]:
        key = (leaf.rows().sql(), leaf.last_days)
        if key not in self.behaviors:
            self.behaviors[key] = len(self.behaviors)
            self.leaves.append(leaf)
        k = self.behaviors[key]
        zero = exp.Literal.number(0)
        return (exp.func("COALESCE", col(f"c{k}", "w"), zero),
                exp.func("COALESCE", col(f"a{k}", "w"), zero.copy()))


@dataclass
class CompiledModel:
    name: str
    behaviors: list[tuple[str, int]]   # (filter SQL, days) per column pair c<k>/a<k>
    stages: dict[str, str]             # stage code -> boolean SQL over d, t and w
    has_tags: bool
    zero_ok: bool                      # some stage can hold for a user without behaviour rows
    max_days: int


@dataclass
class Rules:
    path: Path
    meta: Any                          # meta.aipl as written (hashed)
    rules: AiplRules

    @property
    def digest(self) -> str:
        return rules_hash(self.meta)


def rules_hash(meta: Any) -> str:
    """What dbt computes from the model's meta: local_md5(tojson(meta.aipl, sort_keys=true))."""
    return hashlib.md5(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()


def load_rules(root: Path = PROJECT_ROOT) -> Rules:
    """The AIPL rules of the project, in the current spelling and checked; AiplErrors names the
    file, line and field of every problem (old spellings are read, with a message)."""
    path = root / RULES_FILE
    data, lines = read_yaml(path, AiplErrors, "a dbt properties file")
    models = data.get("models") if isinstance(data.get("models"), list) else []
    index = next((i for i, m in enumerate(models) if isinstance(m, dict) and m.get("name") == MODEL), None)
    if index is None:
        raise AiplErrors([Problem(path, 1, "models", f"no model {MODEL} in the file")])
    at = ("models", index, "config", "meta", "aipl")
    meta = ((models[index].get("config") or {}).get("meta") or {}).get("aipl")
    if not isinstance(meta, dict):
        raise AiplErrors([Problem(path, 1, "", f"{MODEL} needs config.meta.aipl.models")])
    try:
        json.dumps(meta)
    except (TypeError, ValueError):
        raise AiplErrors([Problem(path, lines.get(at, 1), field_of(at),
                                  "write dates in the AIPL rules in quotes ('2026-06-30'): dbt hashes the "
                                  "rules as JSON")]) from None
    rewritten, data = [], json.loads(json.dumps(meta))
    for j, model in enumerate(data.get("models") or []):
        stages = model.get("stages") if isinstance(model, dict) else None
        for name, cond in (stages.items() if isinstance(stages, dict) else []):
            r = modernize(cond, (*at, "models", j, "stages", name), lists=True)
            stages[name] = r.data
            rewritten.append(r)
    rules = validate_rewritten(AiplRules, data, path, lines, rewritten, AiplErrors, at=at)
    problems: list[Problem] = []
    report = reporter(path, lines, problems, rewritten)
    env = _Env.from_project(root)
    for j, model in enumerate(rules.models):
        for _, stage in STAGES:
            loc = (*at, "models", j, "stages", stage)
            cond = getattr(model.stages, stage)
            check_condition(cond, loc, env, report)
            for path_, node in cond.walk(loc):
                if node.kind == "behavior" and node.behavior.last_days is None:
                    report((*path_, "behavior", "between"), "an AIPL behaviour window ends on each stat "
                                                            "date: give last_days, not between")
    if problems:
        raise AiplErrors(problems)
    return Rules(path, meta, rules)


def compile_model(model: AiplModel, tag_types: dict[str, str], delimiters: dict[str, str],
                  dialect: str) -> CompiledModel:
    ctx = _AiplContext(today=exp.column("stat_date", table="d"), tag_types=tag_types,
                       delimiters=delimiters)
    stages = {code: to_sql(compile_condition(getattr(model.stages, name), ctx), dialect, pretty=False)
              for code, name in STAGES}
    conds: list[ConditionNode] = [getattr(model.stages, name) for _, name in STAGES]
    has_tags = any(c.leaves("tag") for c in conds)
    zero_ok = any(leaf.passes_without_rows() for c in conds for leaf in c.leaves("behavior"))
    behaviors = [(to_sql(leaf.rows(), dialect, pretty=False), leaf.last_days) for leaf in ctx.leaves]
    return CompiledModel(model.name, behaviors, stages, has_tags, zero_ok,
                         max((days for _, days in behaviors), default=1))


def _jinja(value: Any) -> str:
    """A Jinja literal: strings in double quotes with every non-ASCII character, and every one
    Jinja gives a meaning ({, }, %, #), escaped, so that no text of the rules is read as Jinja or
    breaks out of the string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif " " <= ch <= "~" and ch not in "{}%#":
                out.append(ch)
            else:
                out.append(f"\\U{ord(ch):08x}")
        return '"' + "".join(out) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_jinja(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_jinja(k)}: {_jinja(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def render_macros(rules: Rules, root: Path = PROJECT_ROOT) -> str:
    """The text of macros/aipl/_aipl_rules.sql for these rules."""
    env = _Env.from_project(root)
    parts = [
        f"{{#- Generated by `oa aipl compile` from {RULES_FILE} (meta.aipl of {MODEL}); do not edit.\n"
        "    Change the rules there and run `oa aipl compile`: the model refuses to compile while\n"
        "    this file was made from other rules. -#}\n",
        "{% macro aipl_rules_hash() -%}\n"
        f"    {{%- do return({_jinja(rules.digest)}) -%}}\n"
        "{%- endmacro %}\n",
        "{#- Per AIPL model: behaviours [(filter, days)] summed as c<k>/a<k>, stage conditions over\n"
        "    d (the day), t (user_tags) and w (the windows), and whether every user is a candidate. -#}\n"
        "{% macro aipl_rules() -%}\n"
        "    {%- do return(adapter.dispatch('aipl_rules')()) -%}\n"
        "{%- endmacro %}\n",
        "{% macro default__aipl_rules() -%}\n"
        f"    {{{{ exceptions.raise_compiler_error({_jinja(UNSUPPORTED)}) }}}}\n"
        "{%- endmacro %}\n",
    ]
    for engine in ENGINES:
        models = []
        for model in rules.rules.models:
            c = compile_model(model, env.tags, env.delimiters, engine)
            head = ", ".join(f"{_jinja(k)}: {_jinja(v)}" for k, v in (
                ("name", c.name), ("has_tags", c.has_tags), ("zero_ok", c.zero_ok), ("max_days", c.max_days)))
            pad = " " * 16
            behaviors = ",\n".join(f"{pad}{_jinja({'filter': f, 'days': d})}" for f, d in c.behaviors)
            stages = ",\n".join(f"{pad}{_jinja(code)}: {_jinja(sql)}" for code, sql in c.stages.items())
            models.append(f"        {{\n            {head},\n"
                          f"            \"behaviors\": [\n{behaviors}\n            ],\n"
                          f"            \"stages\": {{\n{stages}\n            }}\n        }}")
        parts.append(f"{{% macro {engine}__aipl_rules() -%}}\n"
                     "    {%- do return([\n" + ",\n".join(models) + "\n    ]) -%}\n"
                     "{%- endmacro %}\n")
    return "\n".join(parts)


def compile_rules(root: Path = PROJECT_ROOT, write: bool = True) -> tuple[Rules, bool]:
    """Compiles the rules and writes the macro file when it differs; returns whether it did."""
    rules = load_rules(root)
    text = render_macros(rules, root)
    target = root / MACRO_FILE
    current = target.read_text(encoding="utf-8") if target.exists() else None
    if write and current != text:
        target.write_text(text, encoding="utf-8")
    return rules, current != text
