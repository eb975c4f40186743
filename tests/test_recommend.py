"""Product recommendation: pools validate like segments (file, line, field); on generated data
the chosen model beats the best sellers on HR@10 with its hyper-parameters tuned on an earlier
split; the evaluation is a global time split; tasks write each member's top products from the
pool (leaving out what they bought, as the policy says), a one-product pool a 0-1 preference, and
refuse what they cannot do before writing anything. Both engines give the same results."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from ml import recommend as rc
from ml.pools import PoolErrors, load_pools, pool_items
from ml.report import recommend_charts, write_recommend_report
from openaudience.core.errors import UserError
from openaudience.segments.engine import build
from openaudience.segments.source import AUDIENCE_DIR, load_project
from tests.conftest import END_DATE, ENGINES
from tests.test_segments import CATALOG


# -- pools ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("name: p\nany:\n  - tag: {name: categry, in: [shoes]}\n",
     "p.yml:3: any[0].tag.name: unknown product tag 'categry' (did you mean 'category'?)"),
    ("name: p\nall:\n  - tag: {name: price, in: [1]}\n",
     "p.yml:3: all[0].tag.in: operator 'in' does not apply to numeric tag 'price' (use =, !=, >, >=, <, <=, "
     "between, is_null, is_not_null)"),
    ("name: p\nany:\n  - all:\n      - tag: {name: price, \">=\": cheap}\n",
     "p.yml:4: any[0].all[0].tag.>=: >= on a numeric tag takes a number, not 'cheap'"),
    ("name: p\nany:\n  - tag: {name: category, in: [a]}\nall:\n  - tag: {name: category, in: [b]}\n",
     "p.yml:1: each condition is exactly one of all, any, not, tag; got all, any"),
    ("name: p\nany: []\n",
     "p.yml:2: any: any: needs at least one condition"),
    ("name: p\n",
     "p.yml:1: a pool needs its condition: any: [...], all: [...] or one tag"),
    ("name: p\nany:\n  - tag: {name: category}\n",
     "p.yml:3: any[0].tag: a tag condition has exactly one operator besides name, got none"),
    ("name: p\nany:\n  - behavior: {did: purchase, last_days: 30}\n",
     "p.yml:3: any[0]: behavior conditions are not allowed in product pools; the kinds allowed are all, "
     "any, not, tag"),
    ("name: q\nany:\n  - tag: {name: category, in: [shoes]}\n",
     "p.yml:1: name: the file is p.yml; name it q.yml or the pool p"),
])
def test_pool_errors_name_the_file_line_and_field(tmp_path, text, expected):
    (tmp_path / "p.yml").write_text(text)
    with pytest.raises(PoolErrors) as info:
        load_pools(tmp_path)
    assert expected in str(info.value), str(info.value)


def test_the_shipped_pools_and_config_load():
    pools = load_pools()
    assert {"skincare_and_beauty", "skincare_only", "flagship_product"} <= set(pools)
    config = rc.load_config()
    assert {t.pool for t in config.tasks} <= set(pools)


@pytest.mark.parametrize("engine", ENGINES)
def test_pools_select_what_their_conditions_say(built_engines, engine):
    wh = built_engines[engine].warehouse
    products = pd.DataFrame(wh.query("select item_id, category, price from marts.product_tags"),
                            columns=["item_id", "category", "price"])
    got = set(pool_items(wh, load_pools()["skincare_and_beauty"]))
    want = products[products["category"].isin(["skincare", "beauty"])
                    | ((products["category"] == "snacks") & (products["price"].astype(float) >= 30))]
    assert got == set(want["item_id"]) and got


# -- the models -------------------------------------------------------------------------------------
def test_ease_and_cosine_learn_co_purchase():
    """Two groups who buy within their own half of ten products: the learnt weights link
    products of one half, and a buyer of product 0 gets products 1-4 before 5-9."""
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    rows, cols = [], []
    for person in range(400):
        half = person % 2
        for item in rng.choice(5, 3, replace=False) + 5 * half:
            rows.append(person)
            cols.append(item)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(400, 10))
    history = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 10))
    for name, params in (("ease", {"lambda": 10.0}), ("cosine", {"shrink": 0.0})):
        scores = rc.fit(name, params, X).scores(history)[0]
        assert min(scores[1:5]) > max(scores[5:]), (name, scores)


@pytest.mark.slow
def test_the_chosen_model_beats_the_best_sellers_and_tasks_recommend(signal, tmp_path):
    wh = signal.warehouse
    training = rc.train(wh)
    test = training.test.set_index("model")
    chosen = training.chosen[0]
    print(training.chosen, test[["hr@10", "ndcg@10"]].to_dict())
    assert chosen in ("cosine", "ease", "ease_recency") and training.warnings == []
    assert test.loc[chosen, "hr@10"] > test.loc["popularity", "hr@10"]
    assert test.loc[chosen, "ndcg@10"] > test.loc["popularity", "ndcg@10"]
    # every candidate was tuned on the earlier split, and the chosen one is the best there
    tuning = training.tuning
    config = rc.load_config()
    per_lambda = 1 + len(config.recency_days)  # EASE, and EASE recency-weighted per tau
    assert len(tuning) == 1 + len(config.cosine_shrinks) + len(config.ease_lambdas) * per_lambda
    # the exclusion the tasks apply is the one judged; both figures are reported
    assert training.exclude == config.exclude_purchased == "auto"
    assert (test["hr@10 incl"] > 0).all() and (test["people"] >= 50).all()
    assert tuning.sort_values("ndcg@10").iloc[-1]["model"] == chosen
    assert (training.graph["weight"].between(0, 1)).all() and training.nodes["top"].sum() == 10
    # tasks: build their audiences, then recommend
    project = load_project(AUDIENCE_DIR, CATALOG)
    build(project, project.upstream(sorted({t.audience for t in config.tasks})), END_DATE, wh=wh)
    pools = load_pools()
    picks = next(t for t in config.tasks if t.name == "shanghai_beauty_picks")
    result = rc.run_task(wh, picks, config, pools)
    rows = pd.DataFrame(wh.query("select one_id, item_id, rank, score from ml.recommendations "
                                 "where task = %s", [picks.name]),
                        columns=["one_id", "item_id", "rank", "score"])
    assert result.rows == len(rows) <= result.users * picks.top
    ranks = rows.groupby("one_id")["rank"].apply(sorted)
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert ranks.map(len).max() == picks.top
    assert set(rows["item_id"]) <= set(pool_items(wh, pools[picks.pool]))
    assert (rows.groupby("one_id")["item_id"].nunique() == ranks.map(len)).all()
    # exclude_purchased: true, and the whole pool (up to 100): nobody is offered what they ever bought
    every = picks.model_copy(update={"top": 100, "exclude_purchased": True})
    whole = rc.run_task(wh, every, config, pools)
    offered = pd.DataFrame(wh.query("select one_id, item_id, rank from ml.recommendations where task = %s",
                                    [picks.name]), columns=["one_id", "item_id", "rank"])
    bought = pd.DataFrame(wh.query("select distinct one_id, item_id from marts.fct_behaviors where "
                                   "event_type = 'purchase'"), columns=["one_id", "item_id"])
    assert len(offered) == whole.rows > 0 and whole.top == min(100, whole.products)
    assert offered.merge(bought, on=["one_id", "item_id"]).empty
    per_person = offered.groupby("one_id").size()
    assert per_person.max() <= whole.products and (per_person < whole.products).any()
    # exclude_purchased: false offers them again: the whole pool to everyone
    again = rc.run_task(wh, every.model_copy(update={"exclude_purchased": False}), config, pools)
    assert again.rows == again.users * again.top
    result = rc.run_task(wh, picks, config, pools)
    # scores fall with rank within each person
    ordered = rows.sort_values(["one_id", "rank"])
    assert (ordered.groupby("one_id")["score"].diff().dropna() <= 1e-12).all()
    single = next(t for t in config.tasks if t.name == "vip_flagship_preference")
    one = rc.run_task(wh, single, config, pools)
    pref = [r[0] for r in wh.query("select score from ml.recommendations where task = %s", [single.name])]
    assert one.single_product and one.rows == len(pref) == one.users
    assert min(pref) == 0.0 and max(pref) == 1.0
    # refusals write nothing
    before = wh.query("select count(*) from ml.recommendations")[0][0]
    with pytest.raises(UserError, match="is above max_pairs 1 in recommend.yml"):
        rc.run_task(wh, picks, config.model_copy(update={"max_pairs": 1}), pools)
    with pytest.raises(UserError, match="unknown pool 'nope'"):
        rc.run_task(wh, picks.model_copy(update={"pool": "nope"}), config, pools)
    assert wh.query("select count(*) from ml.recommendations")[0][0] == before
    path = write_recommend_report(training, tmp_path, [result, one])
    assert "Against the best sellers" in path.read_text()
    assert set(recommend_charts(training)) == {"metrics", "association"}


def test_both_engines_choose_the_same_model_and_recommend_the_same(ml_engines):
    """What the model reads and what a task writes go through SQL: on the same data both engines
    choose the same model with the same figures and write the same recommendations (the quality
    is judged once, on `signal`)."""
    project = load_project(AUDIENCE_DIR, CATALOG)
    config = rc.load_config()
    picks = next(t for t in config.tasks if t.name == "shanghai_beauty_picks")
    pools = load_pools()
    tests, written = {}, {}
    for engine, target in ml_engines.items():
        wh = target.warehouse
        training = rc.train(wh)
        tests[engine] = (training.chosen, training.test.round(9).to_dict("records"))
        build(project, project.upstream([picks.audience]), END_DATE, wh=wh)
        rc.run_task(wh, picks, config, pools)
        written[engine] = pd.DataFrame(
            wh.query("select one_id, item_id, rank, score from ml.recommendations where task = %s "
                     "order by one_id, rank", [picks.name]), columns=["one_id", "item_id", "rank", "score"])
    assert tests["duckdb"] == tests["postgres"]
    assert len(written["duckdb"]) > 0
    pd.testing.assert_frame_equal(written["duckdb"], written["postgres"], check_dtype=False, atol=1e-9)


def test_too_few_buyers_is_a_clear_message(built_engines):
    config = rc.load_config().model_copy(update={"min_users": 10_000_000})
    with pytest.raises(rc.DataTooSmall, match="recommendation needs at least 10,000,000 buyers"):
        rc.train(built_engines["duckdb"].warehouse, config)


def test_an_unknown_task_pool_in_the_config_names_the_line(tmp_path):
    (tmp_path / "recommend.yml").write_text(textwrap.dedent("""\
        lookback_days: 365
        tasks:
          - {name: t, audience: a, pool: p, top: 101}
        """))
    with pytest.raises(rc.ConfigErrors, match=r"recommend.yml:3: tasks\[0\].top: Input should be less "
                                              "than or equal to 100"):
        rc.load_config(tmp_path / "recommend.yml")


def _purchases(lines: list[tuple[str, str, str]], as_of: str = "2026-06-30") -> rc.Purchases:
    import datetime as dt

    people, person = np.unique([w for w, _, _ in lines], return_inverse=True)
    items, item = np.unique([i for _, i, _ in lines], return_inverse=True)
    return rc.Purchases(people=people, items=items, person=person, item=item,
                        at=np.array([d for _, _, d in lines], dtype="datetime64[us]"),
                        as_of=dt.date.fromisoformat(as_of))


def test_nobody_buying_twice_is_a_clear_message():
    import datetime as dt

    p = _purchases([(f"p{i}", "ab"[i % 2], "2026-06-20") for i in range(5)])
    with pytest.raises(rc.DataTooSmall, match="nobody bought both before and after 2026-06-01"):
        rc.time_split(p, dt.date(2026, 6, 1), dt.date(2026, 6, 30))


def test_the_time_split_fits_on_nothing_after_its_cutoff_and_holds_out_the_last_day():
    import datetime as dt

    p = _purchases([
        ("ann", "a", "2026-05-01"), ("ann", "b", "2026-06-10"), ("ann", "c", "2026-06-20"),
        ("ann", "d", "2026-06-20"),                                   # ann: last day after the cutoff
        ("bob", "a", "2026-06-05"), ("bob", "b", "2026-06-25"),       # bob: both after the cutoff
        ("cy", "c", "2026-05-20"),                                    # cy: nothing after
        ("dee", "e", "2026-06-12"),                                   # dee: one day only
        ("eve", "a", "2026-05-02"), ("eve", "a", "2026-07-05"),       # eve: after the end
    ])
    split = rc.time_split(p, dt.date(2026, 6, 1), dt.date(2026, 6, 30))
    assert (p.day[split.fit] <= np.datetime64("2026-06-01")).all() and split.fit.sum() == 3
    pairs = zip(split.users, split.held, strict=True)
    judged = {p.people[u]: {p.items[i] for i in held} for u, held in pairs}
    assert judged == {"ann": {"c", "d"}, "bob": {"b"}}
    ann = list(p.people[split.users]).index("ann")
    history = split.history(len(p.items)).toarray()[ann]
    assert [p.items[i] for i in np.flatnonzero(history)] == ["a", "b"]
    # recency: b (10 days before the held day) weighs more than a (50 days before)
    weighted = split.history(len(p.items), tau=30).toarray()[ann]
    a, b = (list(p.items).index(x) for x in "ab")
    assert weighted[b] == pytest.approx(np.exp(-10 / 30)) and weighted[a] == pytest.approx(np.exp(-50 / 30))


def test_auto_leaves_out_only_products_people_rarely_buy_again():
    """`a` is bought again by 2 of its 3 buyers, `b` by none of its 2: auto with a 0.5 threshold
    leaves out `b` only; true every product, false none."""
    p = _purchases([("x", "a", "2026-06-01"), ("x", "a", "2026-06-08"), ("y", "a", "2026-06-02"),
                    ("y", "a", "2026-06-09"), ("z", "a", "2026-06-03"), ("x", "b", "2026-06-01"),
                    ("y", "b", "2026-06-02"), ("y", "b", "2026-06-02")])
    rates = rc.repeat_rates(p)
    assert list(rates) == pytest.approx([2 / 3, 0.0])
    assert list(rc.excludable("auto", rates, 0.5)) == [False, True]
    assert list(rc.excludable(True, rates, 0.5)) == [True, True]
    assert list(rc.excludable(False, rates, 0.5)) == [False, False]


def test_the_evaluation_does_not_count_a_held_out_product_the_ranking_left_out():
    """A person who bought `a` and then `a` again: with `a` excluded there is nothing to judge
    them on; with it included, the held-out `a` counts."""
    import datetime as dt

    lines = [("p0", "a", "2026-05-01"), ("p0", "a", "2026-06-10"), ("p1", "b", "2026-05-01"),
             ("p1", "c", "2026-06-10")]
    p = _purchases(lines + [(f"q{i}", "bc"[i % 2], "2026-05-0" + str(1 + i % 5)) for i in range(20)])
    split = rc.time_split(p, dt.date(2026, 6, 1), dt.date(2026, 6, 30))
    model = rc.fit("popularity", {}, p.matrix(split.fit))
    exclude = np.ones(len(p.items), bool)
    assert rc.evaluate(model, split, len(p.items), exclude)["people"] == 1
    assert rc.evaluate(model, split, len(p.items))["people"] == 2


def test_purchase_type_in_recommend_yml_says_where_it_went(tmp_path):
    (tmp_path / "recommend.yml").write_text("lookback_days: 365\npurchase_type: purchase\ntasks: []\n")
    moved = r"recommend.yml:2: purchase_type: purchase_type moved to meta.repurchase.purchase_type in models"
    with pytest.raises(rc.ConfigErrors, match=moved):
        rc.load_config(tmp_path / "recommend.yml")


def test_the_partial_sort_ranks_as_a_full_stable_sort_does():
    """top_columns (partial sort) against a stable argsort, with ties, -inf rows and k past the
    number of columns: the same columns in the same order."""
    rng = np.random.default_rng(4)
    for rows, cols, k in ((50, 200, 10), (30, 7, 10), (40, 60, 60), (1, 1, 1), (0, 5, 3)):
        scores = rng.integers(0, 5, size=(rows, cols)).astype(np.float32)  # many ties
        if rows > 2:
            scores[1] = -np.inf
            scores[2, : cols // 2] = -np.inf
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(rc.top_columns(scores, k), expected)


def test_the_demo_recommendation_example_leaves_the_project_as_one_unit(tmp_path):
    """The shipped tasks are the demo's: removing them breaks exactly the one audience that reads
    them, with what to do; removing that audience too leaves a valid project (audiences,
    destinations, journeys, and the recommendation settings with no tasks)."""
    import shutil

    from openaudience.core.settings import PROJECT_ROOT
    from openaudience.core.yaml_files import FileErrors
    from openaudience.delivery.source import load_destinations
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import Catalog

    for folder in ("audiences", "destinations", "journeys", "ml", "seeds", "models"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder)
    config = tmp_path / "ml" / "recommend.yml"
    text = config.read_text()
    config.write_text(text[:text.index("\ntasks:")] + "\ntasks: []\n")
    with pytest.raises(FileErrors) as info:
        load_project(tmp_path / "audiences", Catalog.from_project(tmp_path))
    [problem] = info.value.problems
    assert str(problem).startswith(f"{tmp_path}/audiences/recommended_skincare_and_beauty.yml:")
    assert "unknown recommendation task 'shanghai_beauty_picks'" in str(problem)
    assert "remove this condition, or this audience" in str(problem)

    (tmp_path / "audiences" / "recommended_skincare_and_beauty.yml").unlink()
    project = load_project(tmp_path / "audiences", Catalog.from_project(tmp_path))
    dests = load_destinations(tmp_path / "destinations", project)
    load_journeys(tmp_path / "journeys", project, dests)
    assert rc.load_config(config, tmp_path / "ml" / "pools", tmp_path / "audiences").tasks == []
