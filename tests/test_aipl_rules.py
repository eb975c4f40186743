"""The AIPL rules in the condition language: `oa aipl compile` turns them into the SQL of
macros/aipl/_aipl_rules.sql, which must be current; the rules are checked with file, line and
field; old spellings compile to the same SQL; and dbt sees exactly the compiled values."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jinja2.sandbox import SandboxedEnvironment

from openaudience.conditions.aipl import (
    MACRO_FILE,
    RULES_FILE,
    AiplErrors,
    compile_model,
    compile_rules,
    load_rules,
    render_macros,
    rules_hash,
)
from openaudience.core.settings import PROJECT_ROOT
from openaudience.segments import spec
from tests.conftest import DBT, OA

assert "rfm" in spec.AUDIENCE_KINDS  # the audience kinds are registered: AIPL refuses them by name

HEADER = ("version: 2\nmodels:\n  - name: aipl_daily\n    config:\n      meta:\n        aipl:\n"
          "          models:\n")


def _project(tmp_path: Path, models: str) -> Path:
    """A project with the seeds and these AIPL models (indented as list items of models:)."""
    shutil.copytree(PROJECT_ROOT / "seeds", tmp_path / "seeds")
    (tmp_path / RULES_FILE).parent.mkdir(parents=True)
    (tmp_path / RULES_FILE).write_text(HEADER + models)
    (tmp_path / MACRO_FILE).parent.mkdir(parents=True)
    return tmp_path


def _model(name: str, awareness: str, interest: str = "{behavior: {did: favourite, last_days: 30}}",
           purchase: str = "{behavior: {did: purchase, last_days: 90}}",
           loyalty: str = "{behavior: {did: purchase, last_days: 90, count: {\">=\": 2}}}") -> str:
    pad = " " * 14
    return (f"            - name: {name}\n{pad}stages:\n{pad}  awareness: {awareness}\n"
            f"{pad}  interest: {interest}\n{pad}  purchase: {purchase}\n{pad}  loyalty: {loyalty}\n")


def test_the_generated_macros_are_those_of_the_shipped_rules(caplog):
    """`oa aipl compile` was run after the last change to the rules (and they are written in
    the current spelling)."""
    with caplog.at_level(logging.WARNING, logger="openaudience.conditions"):
        rules = load_rules()
    assert caplog.records == []
    assert (PROJECT_ROOT / MACRO_FILE).read_text() == render_macros(rules), "run `oa aipl compile`"
    assert compile_rules(write=False)[1] is False


def test_the_hash_is_the_one_dbt_computes_from_the_meta():
    from dbt.context.base import BaseContext  # dbt's Jinja context: 1.5 s to import, here only

    meta = load_rules().meta
    assert rules_hash(meta) == BaseContext.local_md5(BaseContext.tojson(meta, sort_keys=True))
    assert f'return("{rules_hash(meta)}")' in (PROJECT_ROOT / MACRO_FILE).read_text()


def _macro_value(text: str, engine: str) -> list:
    """What `<engine>__aipl_rules()` returns when dbt's Jinja runs it."""
    body = re.search(r"\{% macro " + engine + r"__aipl_rules\(\) -%\}(.*?)\{%- endmacro %\}", text, re.S)
    returned = []
    env = SandboxedEnvironment(extensions=["jinja2.ext.do"])  # the file under test is text we made
    env.from_string(body.group(1)).render(**{"return": returned.append})
    return returned[0]


HOSTILE = "x\"}}{{ 1 }}{% endmacro %}\\'); drop table t; -- 上海 😀 #}"


def test_every_value_reaches_dbt_exactly_and_never_as_jinja(tmp_path):
    quoted = HOSTILE.replace("'", "''")  # in single quotes, YAML's only escape
    root = _project(tmp_path, _model("m", awareness=f"{{tag: {{name: city, in: ['{quoted}']}}}}"))
    rules = load_rules(root)
    assert rules.rules.models[0].stages.awareness.tag.value == [HOSTILE]
    text = render_macros(rules, root)
    for engine in ("duckdb", "postgres"):
        value = _macro_value(text, engine)
        compiled = compile_model(rules.rules.models[0], *_types(root), engine)
        assert value[0]["stages"] == compiled.stages
        assert value[0]["behaviors"] == [{"filter": f, "days": d} for f, d in compiled.behaviors]
        assert HOSTILE.replace("'", "''") in value[0]["stages"]["A"]


def _types(root: Path):
    from openaudience.conditions.aipl import _Env

    env = _Env.from_project(root)
    return env.tags, env.delimiters


OLD = """            - name: default
              stages:
                awareness:
                  - behavior: {event_type: login, last_days: 90}
                  - or: {tag: {name: registered_at, within_last_days: 180}}
                interest:
                  - behavior: {event_type: favourite, channels: [app], last_days: 30}
                  - or: {behavior: {event_type: add_to_cart, channels: [app], last_days: 30}}
                  - and: {tag: {name: views_30d, ">=": 3}}
                purchase:
                  - behavior: {event_type: purchase, last_days: 90}
                loyalty:
                  - behavior: {event_type: purchase, last_days: 90, count: {">=": 2}}
                  - and: {behavior: {event_type: purchase, last_days: 90, amount: {">": 1000}}}
                  - or: {tag: {name: mobile, not_null: true}}
"""
NEW = """            - name: default
              stages:
                awareness:
                  any:
                    - behavior: {did: login, last_days: 90}
                    - tag: {name: registered_at, last_days: 180}
                interest:
                  all:
                    - any:
                        - behavior: {did: favourite, channels: [app], last_days: 30}
                        - behavior: {did: add_to_cart, channels: [app], last_days: 30}
                    - tag: {name: views_30d, ">=": 3}
                purchase:
                  behavior: {did: purchase, last_days: 90}
                loyalty:
                  any:
                    - all:
                        - behavior: {did: purchase, last_days: 90, count: {">=": 2}}
                        - behavior: {did: purchase, last_days: 90, amount: {">": 1000}}
                    - tag: {name: mobile, is_not_null: true}
"""


def test_the_old_spelling_compiles_to_the_same_sql_with_messages_at_its_lines(tmp_path, caplog):
    old, new = _project(tmp_path / "old", OLD), _project(tmp_path / "new", NEW)
    with caplog.at_level(logging.WARNING, logger="openaudience.conditions"):
        old_rules = load_rules(old)
    new_rules = load_rules(new)
    for engine in ("duckdb", "postgres"):
        assert compile_model(old_rules.rules.models[0], *_types(old), engine) == \
            compile_model(new_rules.rules.models[0], *_types(new), engine)
    messages = [r.getMessage().replace(str(old / RULES_FILE), "rules") for r in caplog.records]
    at = "models[0].config.meta.aipl.models[0].stages"
    assert f"rules:10: {at}.awareness: deprecated: write these conditions nested under any: and all: " \
           "instead of a list read left to right ([a, {or: b}, {and: c}] is all: [{any: [a, b]}, c]); the " \
           "list is the old spelling" in messages
    assert f"rules:11: {at}.awareness[0].behavior.event_type: deprecated: write did: login; event_type is " \
           "the old spelling" in messages
    assert f"rules:12: {at}.awareness[1].or.tag.within_last_days: deprecated: write last_days; " \
           "within_last_days is the old spelling" in messages
    assert f"rules:22: {at}.loyalty[2].or.tag.not_null: deprecated: write is_not_null; not_null is the old " \
           "spelling" in messages


def test_the_stages_keep_the_aipl_semantics(tmp_path):
    """Windows are the N days ending on the stat date; count defaults to >= 1; a stage a user
    without behaviour can meet makes every user a candidate; tag windows end on the stat date."""
    rules = load_rules(_project(tmp_path, _model(
        "m", awareness="{behavior: {did: login, last_days: 7, count: {\"<\": 1}}}",
        interest="{tag: {name: registered_at, last_days: 30}}")))
    c = compile_model(rules.rules.models[0], *_types(tmp_path), "duckdb")
    assert c.zero_ok and c.has_tags and c.max_days == 90
    # one column pair per distinct behaviour and window: loyalty's and purchase's are one
    assert c.behaviors == [("\"event_type\" = 'purchase'", 90), ("\"event_type\" = 'login'", 7)]
    assert c.stages["L"] == 'COALESCE("w"."c0", 0) >= 2'
    assert c.stages["P"] == 'COALESCE("w"."c0", 0) >= 1'
    assert c.stages["A"] == 'COALESCE("w"."c1", 0) < 1'
    assert c.stages["I"] == ('COALESCE((CAST("t"."registered_at" AS DATE) > CAST(d.stat_date - INTERVAL '
                             '30 DAY AS DATE) AND CAST("t"."registered_at" AS DATE) <= d.stat_date), FALSE)')
    shipped = load_rules()
    assert not any(compile_model(m, *_types(PROJECT_ROOT), "duckdb").zero_ok for m in shipped.rules.models)


@pytest.mark.parametrize(("models", "expected"), [
    (_model("m", awareness="{behavior: {did: logon, last_days: 90}}"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness.behavior.did: unknown behaviour type 'logon' "
     "(did you mean 'login'?)"),
    (_model("m", awareness="{tag: {name: page_views, \">=\": 3}}"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness.tag.name: unknown tag 'page_views'"),
    (_model("m", awareness="{behavior: {did: login, between: ['2026-01-01', '2026-02-01']}}"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness.behavior.between: an AIPL behaviour window "
     "ends on each stat date: give last_days, not between"),
    (_model("m", awareness="{tag: {name: registered_at, between: [2026-01-01, 2026-02-01]}}"),
     "6: models[0].config.meta.aipl: write dates in the AIPL rules in quotes ('2026-06-30'): dbt hashes the "
     "rules as JSON"),
    (_model("m", awareness="{rfm: {model: rfm_default, segments: [x]}}"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness: rfm conditions are not allowed in AIPL "
     "rules; the kinds allowed are all, any, not, tag, behavior"),
    (_model("m", awareness="{tagg: {name: city, in: [a]}}"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness: 'tagg' is not a kind of condition; the "
     "kinds allowed in AIPL rules are all, any, not, tag, behavior"),
    (_model("m", awareness="[{behavior: {did: login, last_days: 9}}, {also: {tag: {name: city, in: [a]}}}]"),
     "10: models[0].config.meta.aipl.models[0].stages.awareness[1]: in the old list form every item after "
     "the first is {and: condition} or {or: condition}"),
    (_model("m", awareness="{behavior: {did: login, last_days: 9}}") + _model("m", awareness="{tag: "
                                                                              "{name: city, in: [a]}}"),
     "7: models[0].config.meta.aipl.models: two AIPL models are named 'm'"),
    (_model("m b", awareness="{behavior: {did: login, last_days: 9}}"),
     "8: models[0].config.meta.aipl.models[0].name: String should match pattern"),
    (_model("m", awareness="{behavior: {did: login, last_days: 9}}").replace("  loyalty:", "  loyal:"),
     "13: models[0].config.meta.aipl.models[0].stages.loyal: Extra inputs are not permitted"),
])
def test_errors_in_the_rules_name_the_file_line_and_field(tmp_path, models, expected):
    root = _project(tmp_path, models)
    with pytest.raises(AiplErrors) as info:
        load_rules(root)
    assert f"{root / RULES_FILE}:{expected}" in str(info.value), str(info.value)


def test_oa_aipl_compile_reports_errors_without_a_traceback(tmp_path):
    root = tmp_path / "project"
    for folder in ("openaudience", "connectors", "ml", "seeds", "models", "macros"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder)  # with its bytecode (make test compiles it)
    shutil.copy(PROJECT_ROOT / "dbt_project.yml", root)
    rules = root / RULES_FILE
    text = rules.read_text()
    rules.write_text(text.replace("{did: login, last_days: 90}", "{did: login, last_days: 0}", 1))
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([OA, "aipl", "compile"], env=env, cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = next(i + 1 for i, ln in enumerate(rules.read_text().splitlines()) if "last_days: 0}" in ln)
    at = "models[0].config.meta.aipl.models[0].stages.awareness.any[0].behavior.last_days"
    assert f"{rules}:{line}: {at}: " \
           "Input should be greater than or equal to 1" in " ".join(done.stderr.split())
    rules.write_text(text.replace("{name: views_30d, \">=\": 3}", "{name: views_30d, \">=\": 4}"))
    done = subprocess.run([OA, "aipl", "compile", "--check"], env=env, cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "run `oa aipl compile`" in done.stderr
    before = (root / MACRO_FILE).read_text()
    done = subprocess.run([OA, "aipl", "compile"], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = (root / MACRO_FILE).read_text()
    assert after != before and "\"t\".\"views_30d\" >= 4" in after.replace('\\"', '"')


@pytest.mark.slow
def test_dbt_refuses_rules_changed_since_the_last_compile(tmp_path):
    root = tmp_path / "project"
    for folder in ("seeds", "models", "macros"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder)
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(PROJECT_ROOT / name, root)
    rules = root / RULES_FILE
    rules.write_text(rules.read_text().replace('{name: views_30d, ">=": 3}', '{name: views_30d, ">=": 4}'))
    env = {**os.environ, "OA_TARGET": "duckdb", "OA_DUCKDB_PATH": str(tmp_path / "wh.duckdb")}
    done = subprocess.run([DBT, "compile", "--select", "aipl_daily", "--project-dir", str(root),
                           "--profiles-dir", str(root)], env=env, cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "AIPL rules changed in models/marts/aipl/_aipl__models.yml; run `oa aipl compile`" in done.stdout


def test_an_event_code_of_events_is_a_behaviour_type_of_the_rules(tmp_path):
    """The codes of events/*.yml are behaviour types in AIPL rules as in audiences: awareness can
    be an app login the collector took; a code no file defines is still unknown."""
    root = _project(tmp_path, _model("m", awareness="{behavior: {did: h5_login, last_days: 7}}"))
    shutil.copytree(PROJECT_ROOT / "events", root / "events")
    rules = load_rules(root)
    c = compile_model(rules.rules.models[0], *_types(root), "duckdb")
    assert ("\"event_type\" = 'h5_login'", 7) in c.behaviors
    shutil.rmtree(root / "events")
    with pytest.raises(AiplErrors, match="unknown behaviour type 'h5_login'"):
        load_rules(root)
