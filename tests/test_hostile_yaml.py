"""Hostile YAML: every project YAML file is read by one loader that refuses duplicate keys,
impossible dates, alias bombs, runaway nesting and oversized files at their line; the segment
language refuses values that would only fail (or silently mismatch) at build time; the model
configurations (ml/recommend.yml, ml/pools/, meta.repurchase, the AIPL rules) do the same. Each
refusal is exit 2 with file:line and no traceback, through the real `oa` where a user would meet
it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ml import recommend as rc
from ml import repurchase as rp
from ml.pools import PoolErrors, load_pools
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import MAX_BYTES, FileErrors, load_yaml
from openaudience.segments.source import Catalog
from tests.conftest import OA, Target, make_target
from tests.support.hostile import assert_refused


def _lol_lists() -> str:
    """The classic: nine levels of nine aliases to the level below, 9^9 strings expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _lol_mappings() -> str:
    """The same through mappings (and a merge key at the top), not lists."""
    lines = ["m0: &m0 {a: lol, b: lol, c: lol, d: lol}"]
    lines += [f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(8))}}}" for i in range(1, 9)]
    lines.append("top: {<<: *m8, extra: 1}")
    return "\n".join(lines) + "\n"


def _doubling() -> str:
    """Forty levels of two aliases each: only 2^40 once expanded, from 40 short lines."""
    lines = ["d0: &d0 [x, x]"] + [f"d{i}: &d{i} [*d{i - 1}, *d{i - 1}]" for i in range(1, 41)]
    return "\n".join(lines) + "\n"


def _fan() -> str:
    """No nesting of aliases at all: one list of 1,000 values named 200 times."""
    return ("big: &big [" + ", ".join(str(i) for i in range(1000)) + "]\n"
            + "fan:\n" + "".join("  - *big\n" for _ in range(200)))


BOMBS = {"lol_lists": _lol_lists(), "lol_mappings": _lol_mappings(), "doubling": _doubling(),
         "fan": _fan()}


def _problems(path: Path) -> list[str]:
    with pytest.raises(FileErrors) as info:
        load_yaml(path)
    return [str(p).replace(str(path.parent) + "/", "") for p in info.value.problems]


# -- the loader --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\na: 5\n",
     ["x.yml:5: b.c: key 'c' appears twice (first at line 3); keep one",
      "x.yml:6: a: key 'a' appears twice (first at line 1); keep one"]),
    ("tasks:\n  - {name: t, top: 3, top: 4}\n",
     ["x.yml:2: tasks[0].top: key 'top' appears twice (first at line 2); keep one"]),
    ("1: one\n01: also one\n",  # equal once read, however written
     ["x.yml:2: 01: key '01' appears twice (first at line 1); keep one"]),
    ("as_of: 2026-02-30\n",
     ["x.yml:1: as_of: '2026-02-30' is not a date (day is out of range for month)"]),
    ("window:\n  between: [2026-01-01, 2026-13-01]\n",
     ["x.yml:2: window.between[1]: '2026-13-01' is not a date (month must be in 1..12)"]),
    ("n: " + "9" * 5000 + "\n",
     ["x.yml:1: n: '" + "9" * 40 + "' is not a whole number (Exceeds the limit (4300 digits) for integer "
      "string conversion)"]),
    ("a: &a [1, *a]\n",
     ["x.yml:1: alias *a is inside the value it names (a recursive structure); a value cannot contain "
      "itself"]),
    ("a: *nowhere\n", ["x.yml:1: alias *nowhere names no anchor (&nowhere) written before it"]),
    ("x: " + "[" * 100 + "]" * 100 + "\n", ["x.yml:1: nested more than 64 levels deep"]),
    ("list:\n" + "".join(f"  - {i}\n" for i in range(100_001)),
     ["x.yml:99999: more than 100,000 values in one file; split it"]),  # the mapping, key and list: 3
    ("x: !!python/object/apply:os.system [echo hi]\n",
     ["x.yml:1: not valid YAML: could not determine a constructor for the tag "
      "'tag:yaml.org,2002:python/object/apply:os.system'"]),
])
def test_the_loader_refuses_at_the_line(tmp_path, text, expected):
    path = tmp_path / "x.yml"
    path.write_text(text)
    assert _problems(path) == expected


def test_the_loader_refuses_oversized_and_non_utf8_files(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text("# padding\n" * (MAX_BYTES // 10) + "a: 1\n")
    assert _problems(path) == [f"x.yml: the file is larger than {MAX_BYTES:,} bytes, the most a project "
                               "YAML file may be; split it"]
    path.write_bytes("a: 1\nb: caf\xe9\n".encode("latin-1"))
    assert _problems(path) == ["x.yml:2: not UTF-8 text (byte 11); save the file as UTF-8"]


def test_the_loader_keeps_what_yaml_means(tmp_path):
    """Merge keys override, anchors within the bounds are shared, dates are dates, and every
    key has its line."""
    path = tmp_path / "x.yml"
    path.write_text("base: &b {k: 1, j: 2}\nm:\n  <<: *b\n  k: 3\nd: 2026-02-28\nl: [*b, *b]\n")
    data, lines = load_yaml(path)
    assert data["m"] == {"k": 3, "j": 2} and data["l"] == [{"k": 1, "j": 2}] * 2
    assert str(data["d"]) == "2026-02-28" and lines[("m", "k")] == 4 and lines[("d",)] == 5


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_alias_bombs_fail_fast_in_little_memory(tmp_path, bomb):
    """In a fresh process: the time the refusal takes and how much the peak memory grows."""
    path = tmp_path / f"{bomb}.yml"
    path.write_text(BOMBS[bomb])
    probe = textwrap.dedent("""\
        import json, resource, sys, time
        from pathlib import Path
        from openaudience.core.yaml_files import FileErrors, load_yaml
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            load_yaml(Path(sys.argv[1]))
            outcome = "loaded"
        except FileErrors as exc:
            outcome = str(exc)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"seconds": time.perf_counter() - start, "grew_kb": grew, "outcome": outcome}))
        """)
    done = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert f"{bomb}.yml:" in result["outcome"] and "too many aliases" in result["outcome"], result
    assert result["seconds"] < 1.0, result
    assert result["grew_kb"] < 50 * 1024, result


# -- audiences through `oa audience validate` ------------------------------------------------------
AUDIENCES = {  # file stem -> (body after the name line, what validate prints)
    "hostile_duplicate_key": (
        "where:\n  tag: {name: city, in: [Shanghai]}\n  tag: {name: city, in: [Beijing]}\n",
        "hostile_duplicate_key.yml:4: where.tag: key 'tag' appears twice (first at line 3)"),
    "hostile_billion_laughs": (
        _lol_lists() + "where:\n  tag: {name: city, in: *l8}\n",
        "hostile_billion_laughs.yml:7: too many aliases: expanding *l4"),
    "hostile_impossible_date": (
        "where:\n  tag: {name: registered_at, between: [2026-02-30, 2026-03-31]}\n",
        "hostile_impossible_date.yml:3: where.tag.between[0]: '2026-02-30' is not a date (day is out "
        "of range for month)"),
    "hostile_impossible_behavior_date": (
        "where:\n  behavior:\n    did: purchase\n    between: [2026-01-01, 2026-04-31]\n",
        "hostile_impossible_behavior_date.yml:5: where.behavior.between[1]: '2026-04-31' is not a date"),
    "hostile_reversed_numbers": (
        "where:\n  tag: {name: spend_90d, between: [500, 100]}\n",
        "hostile_reversed_numbers.yml:3: where.tag.between: between runs from low to high; [500, 100] is "
        "reversed: write [100, 500]"),
    "hostile_reversed_dates": (
        "where:\n  any:\n    - tag: {name: registered_at, between: [2026-03-31, 2026-03-01]}\n",
        "hostile_reversed_dates.yml:4: where.any[0].tag.between: between runs from low to high; "
        "[2026-03-31, 2026-03-01] is reversed"),
    "hostile_words_on_a_numeric_tag": (
        "where:\n  tag: {name: spend_90d, between: [low, high]}\n",
        "hostile_words_on_a_numeric_tag.yml:3: where.tag.between: between on a numeric tag takes two "
        "numbers, not 'low'"),
    "hostile_infinity_on_a_numeric_tag": (
        "where:\n  tag: {name: spend_90d, \">=\": .inf}\n",
        "hostile_infinity_on_a_numeric_tag.yml:3: where.tag.>=: >= on a numeric tag takes a number, "
        "not inf"),
    "hostile_words_on_a_date_tag": (
        "where:\n  tag: {name: registered_at, between: [2026-03-01, next week]}\n",
        "hostile_words_on_a_date_tag.yml:3: where.tag.between: between on a date tag takes two dates "
        "written YYYY-MM-DD, not 'next week'"),
    "hostile_empty_all": (
        "where:\n  all: []\n",
        "hostile_empty_all.yml:3: where.all: all: needs at least one condition"),
    "hostile_empty_any": (
        "where:\n  not:\n    any: []\n",
        "hostile_empty_any.yml:4: where.not.any: any: needs at least one condition"),
    "hostile_absurd_last_days": (
        "where:\n  tag: {name: last_active_at, last_days: 100000000}\n",
        "hostile_absurd_last_days.yml:3: where.tag.last_days: last_days takes a whole number of days "
        "from 1 to 36,500"),
    "hostile_absurd_before_days_ago": (
        "where:\n  tag: {name: last_active_at, before_days_ago: 100000000}\n",
        "hostile_absurd_before_days_ago.yml:3: where.tag.before_days_ago: before_days_ago takes a whole "
        "number of days from 1 to 36,500"),
    "hostile_absurd_behavior_window": (
        "where:\n  behavior: {did: purchase, last_days: 100000000}\n",
        "hostile_absurd_behavior_window.yml:3: where.behavior.last_days: Input should be less than or "
        "equal to 3660"),
    "hostile_delimiter_in_a_value": (
        "where:\n  tag:\n    name: channels_used\n    contains_any: [\"app,mini_program\", web]\n",
        "hostile_delimiter_in_a_value.yml:5: where.tag.contains_any: value 'app,mini_program' holds "
        "channels_used's delimiter ','; write each element as its own list item: [app, mini_program]"),
}


def _quiet_target(tmp_path: Path) -> Target:
    """An environment of its own (an empty OA_HOME); validation reads files, not the warehouse."""
    return make_target("duckdb", tmp_path, None, "")


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> subprocess.CompletedProcess:
    """One `oa audience validate` over every hostile file: it reports the problems of all files."""
    folder = tmp_path_factory.mktemp("hostile_audiences")
    for name, (body, _) in AUDIENCES.items():
        (folder / f"{name}.yml").write_text(f"name: {name}\n{body}")
    target = _quiet_target(tmp_path_factory.mktemp("home"))
    return target.oa("audience", "validate", *(str(folder / f"{name}.yml") for name in AUDIENCES))


@pytest.mark.parametrize("name", list(AUDIENCES))
def test_validate_refuses_hostile_audiences_at_their_line(validated, name):
    out = assert_refused(validated, f"{len(AUDIENCES)} problem(s)", AUDIENCES[name][1])
    assert out.count(f"{name}.yml:") == 1, out  # one problem per file, the one meant


def test_validate_accepts_what_is_near_the_bounds(tmp_path):
    """The same conditions, written right, are valid: the checks refuse only the mistakes."""
    (tmp_path / "near_the_bounds.yml").write_text(textwrap.dedent("""\
        name: near_the_bounds
        where:
          all:
            - tag: {name: registered_at, between: [2026-02-28, "2026-03-31"]}
            - tag: {name: spend_90d, between: [100, 100]}
            - tag: {name: last_active_at, last_days: 36500}
            - tag: {name: channels_used, contains_any: [app, mini_program]}
            - behavior: {did: purchase, last_days: 3660}
        """))
    done = _quiet_target(tmp_path).oa("audience", "validate", str(tmp_path / "near_the_bounds.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


# -- model configuration -----------------------------------------------------------------------------
def test_recommend_config_refuses_duplicate_tasks_and_unknown_pools_and_audiences(tmp_path):
    path = tmp_path / "recommend.yml"
    path.write_text(textwrap.dedent("""\
        lookback_days: 365
        tasks:
          - {name: picks, audience: shanghai_big_spenders, pool: skincare_only}
          - {name: picks, audience: shanghai_big_spenders, pool: skincare}
          - {name: other, audience: shanghai_big_spender, pool: flagship_product}
        """))
    with pytest.raises(rc.ConfigErrors) as info:
        rc.load_config(path)
    assert [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems] == [
        "recommend.yml:4: tasks[1].name: task 'picks' appears twice (first at line 3); task names are unique",
        "recommend.yml:4: tasks[1].pool: unknown pool 'skincare' (did you mean 'skincare_only'?); the pools "
        "are ml/pools/<name>.yml",
        "recommend.yml:5: tasks[2].audience: unknown audience 'shanghai_big_spender' (did you mean "
        "'shanghai_big_spenders'?); the audiences are audiences/<name>.yml (a removed audience takes its "
        "tasks along: remove this task)",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("lookback_days: 365\nmin_users: 10\nlookback_days: 30\n",
     "recommend.yml:3: lookback_days: key 'lookback_days' appears twice (first at line 1)"),
    ("as_of: 2026-02-29\n", "recommend.yml:1: as_of: '2026-02-29' is not a date"),
    ("min_users: 10\nas_of: 2026-06-01\n", "recommend.yml:2: as_of: as_of is gone: a run has one as-of date"),
    ("ease_lambdas: [0, .inf]\n", "recommend.yml:1: ease_lambdas[0]: Input should be greater than 0"),
    ("ease_lambdas: [0, .inf]\n", "recommend.yml:1: ease_lambdas[1]: Input should be a finite number"),
    ("lookback_days: 100000000\n", "recommend.yml:1: lookback_days: Input should be less than or equal to "
                                   "36500"),
    (_lol_lists() + "tasks: *l8\n", "recommend.yml:6: too many aliases: expanding *l4"),
    ("min_users: 10\ntasks: " + "[" * 70 + "]" * 70 + "\n",
     "recommend.yml:2: nested more than 64 levels deep"),
])
def test_recommend_config_names_the_line(tmp_path, text, expected):
    (tmp_path / "recommend.yml").write_text(text)
    with pytest.raises(rc.ConfigErrors) as info:
        rc.load_config(tmp_path / "recommend.yml")
    assert expected in str(info.value).replace(str(tmp_path) + "/", ""), str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("name: p\nany:\n  - tag: {name: category, in: [shoes], in: [bags]}\n",
     "p.yml:3: any[0].tag.in: key 'in' appears twice (first at line 3)"),
    ("name: p\nany:\n  - tag: {name: listed_at, \">=\": last spring}\n",
     "p.yml:3: any[0].tag.>=: >= on a date tag takes a date written YYYY-MM-DD, not 'last spring'"),
    ("name: p\nany:\n  - tag: {name: listed_at, \">=\": 2026-06-31}\n",
     "p.yml:3: any[0].tag.>=: '2026-06-31' is not a date (day is out of range for month)"),
    ("name: p\nany:\n  - tag: {name: price, \"<\": .inf}\n",
     "p.yml:3: any[0].tag.<: < on a numeric tag takes a number, not inf"),
    ("name: p\nany:\n  - tag: {name: category, in: [true]}\n",
     "p.yml:3: any[0].tag.in: values must be strings or numbers"),
    ("name: p\nany:\n  - tag: {name: category, in: []}\n",
     "p.yml:3: any[0].tag.in: in takes at least one value"),
    (_lol_lists() + "name: p\nany:\n  - tag: {name: category, in: *l8}\n", "p.yml:6: too many aliases"),
    # the flat spelling of earlier releases: read, and its errors still at the lines written
    ("name: p\nany:\n  - {tag: listed_at, \">=\": last spring}\n",
     "p.yml:3: any[0].>=: >= on a date tag takes a date written YYYY-MM-DD, not 'last spring'"),
    ("name: p\nany:\n  - all:\n      - {tag: pricee, \">=\": 3}\n",
     "p.yml:4: any[0].all[0].tag: unknown product tag 'pricee' (did you mean 'price'?)"),
])
def test_pools_name_the_line(tmp_path, text, expected):
    (tmp_path / "p.yml").write_text(text)
    with pytest.raises(PoolErrors) as info:
        load_pools(tmp_path)
    assert expected in str(info.value).replace(str(tmp_path) + "/", ""), str(info.value)


ML_PROPERTIES = PROJECT_ROOT / rp.PROPERTIES
HORIZON = "          horizon_days: 30"
HORIZON_AGAIN = "          horizon_days: 60"


def _copy(folders: tuple[str, ...], root: Path) -> None:
    for folder in folders:
        shutil.copytree(PROJECT_ROOT / folder, root / folder)  # with its bytecode (make test compiles it)


def _line_of(text: str, needle: str) -> int:
    return text.splitlines().index(needle) + 1


def test_repurchase_meta_is_checked_in_its_file(tmp_path):
    """dbt would let a duplicate key silently win; the file is checked with the project's loader
    before the manifest is read, so the error has a line."""
    text = ML_PROPERTIES.read_text()
    doubled = text.replace(f"{HORIZON}\n", f"{HORIZON}\n{HORIZON_AGAIN}\n")
    path = tmp_path / "_ml__models.yml"
    path.write_text(doubled)
    with pytest.raises(rp.PropertiesErrors) as info:
        rp.check_properties(path)
    first, second = _line_of(doubled, HORIZON), _line_of(doubled, HORIZON_AGAIN)
    assert str(info.value) == (f"{path}:{second}: models[0].config.meta.repurchase.horizon_days: key "
                               f"'horizon_days' appears twice (first at line {first}); keep one")
    path.write_text(text.replace("horizon_days: 30", "horizon_days: 400").replace("max_iter: 250",
                                                                                  "max_iter: many"))
    with pytest.raises(rp.PropertiesErrors) as info:
        rp.check_properties(path)
    assert [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems] == [
        f"_ml__models.yml:{_line_of(text, HORIZON)}: models[0].config.meta.repurchase."
        "horizon_days: Input should be less than or equal to 365",
        f"_ml__models.yml:{_line_of(text, '            max_iter: 250')}: models[0].config.meta.repurchase."
        "model.max_iter: Input should be a valid integer, unable to parse string as an integer",
    ]
    assert rp.check_properties() == rp.RepurchaseConfig.model_validate(
        load_yaml(ML_PROPERTIES)[0]["models"][0]["config"]["meta"]["repurchase"])


AIPL_RULES = "models/marts/aipl/_aipl__models.yml"
STAGE = " " * 16  # the indent of a stage in meta.aipl.models[].stages
LOYALTY = f"{STAGE}loyalty:\n{STAGE}  all:\n{STAGE}    - behavior: {{did: purchase, last_days: 90, count"
SECOND_PURCHASE = f"{STAGE}purchase:\n{STAGE}  behavior: {{did: view, last_days: 1}}\n"


def _doubled_aipl_rules() -> tuple[str, int, int]:
    """The AIPL rules with a second `purchase:` stage in the default model, and its two lines."""
    text = (PROJECT_ROOT / AIPL_RULES).read_text()
    assert LOYALTY in text
    doubled = text.replace(LOYALTY, SECOND_PURCHASE + LOYALTY, 1)
    lines = [i + 1 for i, line in enumerate(doubled.splitlines()) if line == f"{STAGE}purchase:"]
    return doubled, lines[0], lines[1]


def test_the_aipl_rules_refuse_a_duplicate_stage(tmp_path):
    """The catalogue an audience is checked against reads the RFM and AIPL properties with the
    project's loader."""
    _copy(("seeds", "ml"), tmp_path)
    (tmp_path / "models/marts/rfm").mkdir(parents=True)
    (tmp_path / "models/marts/aipl").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "models/marts/rfm/_rfm__models.yml", tmp_path / "models/marts/rfm")
    doubled, first, second = _doubled_aipl_rules()
    (tmp_path / AIPL_RULES).write_text(doubled)
    with pytest.raises(FileErrors) as info:
        Catalog.from_project(tmp_path)
    assert str(info.value) == (f"{tmp_path / AIPL_RULES}:{second}: models[0].config.meta.aipl.models[0]."
                               f"stages.purchase: key 'purchase' appears twice (first at line {first}); "
                               "keep one")


# -- the model commands, on a copy of the project with hostile files -------------------------------
@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory) -> tuple[Path, Target]:
    """The project's code and configuration copied, with a duplicate task in ml/recommend.yml, an
    alias bomb among the pools, a duplicate key in meta.repurchase and a duplicate AIPL stage;
    `oa` runs the copy (PYTHONPATH), whose PROJECT_ROOT is the copy."""
    root = tmp_path_factory.mktemp("project")
    _copy(("openaudience", "orchestration", "ml", "connectors", "seeds", "models", "audiences"), root)
    shutil.copy(PROJECT_ROOT / "dbt_project.yml", root)
    recommend = root / "ml/recommend.yml"
    recommend.write_text(recommend.read_text().replace("{name: vip_flagship_preference,",
                                                       "{name: shanghai_beauty_picks,"))
    (root / "ml/pools/hostile_bomb.yml").write_text(
        _lol_lists() + "name: hostile_bomb\nany:\n  - tag: {name: category, in: *l8}\n")
    ml = root / rp.PROPERTIES
    ml.write_text(ml.read_text().replace(f"{HORIZON}\n", f"{HORIZON}\n{HORIZON_AGAIN}\n"))
    (root / AIPL_RULES).write_text(_doubled_aipl_rules()[0])
    target = _quiet_target(tmp_path_factory.mktemp("home"))
    target.env["PYTHONPATH"] = str(root)
    return root, target


def _oa_in(project: tuple[Path, Target], *args: str) -> subprocess.CompletedProcess:
    root, target = project
    start = time.perf_counter()
    done = subprocess.run([OA, *args], env=target.env, cwd=root, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < 60
    return done


def test_ml_recommend_refuses_a_duplicate_task_name(hostile_project):
    root, _ = hostile_project
    first, line = [i + 1 for i, ln in enumerate((root / "ml/recommend.yml").read_text().splitlines())
                   if "{name: shanghai_beauty_picks," in ln]
    assert_refused(_oa_in(hostile_project, "ml", "recommend"),
                   f"{root}/ml/recommend.yml:{line}: tasks[1].name: task 'shanghai_beauty_picks' appears "
                   f"twice (first at line {first})")


def test_ml_pools_refuses_an_alias_bomb(hostile_project):
    root, _ = hostile_project
    assert_refused(_oa_in(hostile_project, "ml", "pools"),
                   f"{root}/ml/pools/hostile_bomb.yml:6: too many aliases")


def test_ml_train_repurchase_refuses_a_duplicate_meta_key(hostile_project):
    root, _ = hostile_project
    text = (root / rp.PROPERTIES).read_text()
    assert_refused(_oa_in(hostile_project, "ml", "train", "repurchase"),
                   f"{root}/{rp.PROPERTIES}:{_line_of(text, HORIZON_AGAIN)}: "
                   "models[0].config.meta.repurchase.horizon_days: key 'horizon_days' appears twice")


def test_audience_validate_refuses_a_duplicate_aipl_stage(hostile_project):
    root, _ = hostile_project
    _, first, second = _doubled_aipl_rules()
    assert_refused(_oa_in(hostile_project, "audience", "validate"),
                   f"{root}/{AIPL_RULES}:{second}: models[0].config.meta.aipl.models[0].stages.purchase: key "
                   f"'purchase' appears twice (first at line {first})")


def test_a_broken_id_type_registry_is_a_message_naming_its_line(tmp_path):
    """seeds/id_types.csv is read as `oa` starts: a rule it does not know stops every command with
    the file and line, not a traceback."""
    root = tmp_path / "project"
    _copy(("openaudience", "orchestration", "ml", "connectors", "seeds"), root)
    seed = root / "seeds/id_types.csv"
    lines = seed.read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("mac,"))
    lines[n] = lines[n].replace(",lower,", ",Lower,")
    seed.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG"))}
    env.update({"OA_HOME": str(tmp_path / "home"), "PYTHONPATH": str(root)})
    done = subprocess.run([sys.executable, "-c", "from openaudience.cli import main; main()", "status"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert_refused(done, f"{seed}:{n + 1}: normalisation 'Lower' of mac is not one of trim, lower, upper")
