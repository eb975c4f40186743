"""Product recommendation: for each person, the products they are most likely to buy, learnt
from who bought what.

Candidate models, all on the person x product purchase matrix of the lookback window:

- **popularity**: the best sellers (distinct buyers), the same list for everyone; the baseline;
- **cosine**: item-item cosine similarity of co-purchase, with a shrinkage term, scoring each
  product by its similarity to what the person bought;
- **EASE** (Steck 2019): the closed-form item-item ridge regression B = I - P / diag(P),
  P = (X'X + lambda I)^-1, with a zero diagonal;
- **EASE, recency-weighted**: the tuned EASE weights, with each product of a person's history
  weighted by exp(-age / tau) instead of 1, so what they bought lately counts more. It costs no
  fit (the weights are EASE's) and is kept only when it wins on the tuning split.

Evaluation is a global time split: the models are fitted on every purchase up to a cutoff
(`holdout_days` before the end) and nothing after it, so no later purchase of anybody helps. The
people judged bought before and after the cutoff; for each, the products of their last purchase
day after it are held out, and what they bought before that day is their history. HR@K (a
held-out product in the top K), recall@K and NDCG@K are reported for K = 3 and 10, twice: with
the products the person bought excluded from the ranking (as the tasks exclude them, see
`exclude_purchased`), and included. Hyper-parameters and the model are chosen by NDCG@10 on an
earlier split (cutoff 2 x holdout_days before the end, judged on the window after it); the later
split reports every model against the best sellers. The chosen model is then refitted on all
purchases and stored as a version, with each product's repeat rate (the share of its buyers who
bought it on two days or more), which `exclude_purchased: auto` reads.

The models see purchases only: no product tag enters them, so the statistic tags of the product
catalogue (sales_90d and the like, flagged is_statistic) cannot leak into training; pools may
filter on any tag.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from ml import purchases
from ml.pools import POOL_DIR, CompiledPool, load_pools, pool_items, write_pool_items
from openaudience.core.errors import UserError
from openaudience.core.schema import operational as op
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import (
    FileErrors,
    Problem,
    field_of,
    line_of,
    read_yaml,
    suggest,
    validate_model,
)

CONFIG_FILE = PROJECT_ROOT / "ml" / "recommend.yml"
AUDIENCE_DIR = PROJECT_ROOT / "audiences"  # (as segments.source has it; not imported, to stay light)
MODEL = "recommend"
RECOMMENDATIONS_TABLE = op.RECOMMENDATIONS.relation
KS = (3, 10)
CHUNK = 4096
SEED = 20_240_601


MAX_TOP = 100
Exclude = bool | Literal["auto"]


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    audience: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    pool: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    top: int = Field(5, ge=1, le=MAX_TOP)
    exclude_purchased: Exclude | None = None
    """Leave out products the person already bought: true, false, or auto (those bought again
    by fewer than repeat_threshold of their buyers). Default: the config's."""


# a hyper-parameter grid: each value fits one more model, so a handful; finite, and EASE's
# lambda above 0 (the regularised Gram matrix must be invertible)
Grid = Field(min_length=1, max_length=20)
Lambdas = Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Grid]
Shrinks = Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Grid]
Taus = Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(max_length=20)]


class RecommendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lookback_days: int = Field(365, ge=30, le=36_500)
    ease_lambdas: Lambdas = Field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0])
    cosine_shrinks: Shrinks = Field(default_factory=lambda: [0.0, 10.0, 50.0])
    recency_days: Taus = Field(default_factory=lambda: [30.0, 90.0, 180.0])
    """tau of the recency-weighted EASE (days); [] leaves that candidate out."""
    holdout_days: int = Field(30, ge=7, le=365)
    """The evaluation windows: the last holdout_days judge the models, the ones before tune them."""
    exclude_purchased: Exclude = "auto"
    repeat_threshold: float = Field(0.15, ge=0, le=1)
    max_pairs: int = Field(50_000_000_000, ge=1)
    """A task refuses an audience x pool larger than this (the manual's 50 billion)."""
    evaluation_users: int = Field(20_000, ge=100)
    min_users: int = Field(200, ge=10)
    tasks: list[Task] = Field(default_factory=list)


class ConfigErrors(FileErrors):
    pass


def load_config(path: Path = CONFIG_FILE, pool_dir: Path = POOL_DIR,
                audience_dir: Path = AUDIENCE_DIR) -> RecommendConfig:
    """ml/recommend.yml, checked: its values, and tasks with distinct names that name a pool of
    `pool_dir` and an audience of `audience_dir`; ConfigErrors lists every problem at its line.
    The references are checked here, not when a task runs, so that a typo fails before the
    training it would otherwise follow."""
    data, lines = read_yaml(path, ConfigErrors, "a mapping of recommendation settings")
    if isinstance(data, dict) and "as_of" in data:
        raise ConfigErrors([Problem(path, line_of(lines, ("as_of",)), "as_of",
                                    "as_of is gone: a run has one as-of date, the --as-of of oa build and "
                                    "oa nightly (the dbt var as_of), and both models take T, the day of "
                                    "the latest purchase on or before it (marts.ml_reference_date); "
                                    "remove it here")])
    if isinstance(data, dict) and "purchase_type" in data:
        raise ConfigErrors([Problem(path, line_of(lines, ("purchase_type",)), "purchase_type",
                                    "purchase_type moved to meta.repurchase.purchase_type in "
                                    "models/marts/ml/_ml__models.yml, the one definition of a purchase "
                                    "for both models (marts.ml_purchases); remove it here")])
    config = validate_model(RecommendConfig, data, path, lines, ConfigErrors)
    pools = {p.stem for p in pool_dir.glob("*.yml")}
    audiences = {p.stem for p in [*audience_dir.glob("*.yml"), *audience_dir.glob("*.yaml")]}
    problems: list[Problem] = []
    first: dict[str, int] = {}

    def report(i: int, key: str, message: str) -> None:
        loc = ("tasks", i, key)
        problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))

    for i, task in enumerate(config.tasks):
        if task.name in first:
            report(i, "name", f"task {task.name!r} appears twice (first at line {first[task.name]}); "
                              "task names are unique")
        first.setdefault(task.name, line_of(lines, ("tasks", i, "name")))
        if task.pool not in pools:
            report(i, "pool", f"unknown pool {task.pool!r}{suggest(task.pool, pools)}; the pools are "
                              "ml/pools/<name>.yml")
        if task.audience not in audiences:
            report(i, "audience", f"unknown audience {task.audience!r}{suggest(task.audience, audiences)}; "
                                  "the audiences are audiences/<name>.yml (a removed audience takes its "
                                  "tasks along: remove this task)")
    if problems:
        raise ConfigErrors(problems)
    return config


class DataTooSmall(UserError):
    pass


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Purchases:
    """Purchase lines of the lookback window: codes for people and products, and the time."""

    people: np.ndarray            # one_id per person code
    items: np.ndarray             # item_id per product code
    person: np.ndarray            # per line
    item: np.ndarray
    at: np.ndarray                # datetime64 per line
    as_of: dt.date

    @property
    def day(self) -> np.ndarray:
        return self.at.astype("datetime64[D]")

    def matrix(self, mask: np.ndarray | None = None) -> sp.csr_matrix:
        rows, cols = (self.person, self.item) if mask is None else (self.person[mask], self.item[mask])
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                          shape=(len(self.people), len(self.items)))
        m.data[:] = 1.0  # bought or not
        return m


def read_purchases(wh, config: RecommendConfig) -> Purchases:
    """The purchase lines of the lookback window (marts.ml_purchases: behaviour purchases or paid
    order lines), of products in the catalogue."""
    as_of = purchases.source(wh).reference  # T; a clear message when there is nothing to learn from
    start = as_of - dt.timedelta(days=config.lookback_days)
    rows = wh.query(f"select b.one_id, b.item_id, b.occurred_at from {purchases.TABLE} b "
                    "join marts.product_tags p on p.item_id = b.item_id "
                    "where b.purchase_date > %s and b.purchase_date <= %s "
                    "order by b.one_id, b.occurred_at, b.item_id", [start, as_of])
    df = pd.DataFrame(rows, columns=["one_id", "item_id", "at"])
    people, person = np.unique(df["one_id"].astype(str).to_numpy(), return_inverse=True)
    items, item = np.unique(df["item_id"].astype(str).to_numpy(), return_inverse=True)
    return Purchases(people, items, person, item, pd.to_datetime(df["at"]).to_numpy(), as_of)


def bought_before(wh, people: list[str], as_of: dt.date) -> pd.DataFrame:
    """Every (one_id, item_id) the people bought up to `as_of`, over all history (not only the
    lookback window): what `exclude_purchased` leaves out."""
    rows = wh.query(f"select distinct one_id, item_id from {purchases.TABLE} where purchase_date <= %s "
                    "and item_id is not null", [as_of])
    df = pd.DataFrame(rows, columns=["one_id", "item_id"]).astype(str)
    return df[df["one_id"].isin(set(people))]


def repeat_rates(p: Purchases, mask: np.ndarray | None = None) -> np.ndarray:
    """Per product code: the share of its buyers (in the lines of `mask`) who bought it on two
    different days or more; 0 for products nobody bought there."""
    mask = np.ones(len(p.person), bool) if mask is None else mask
    df = pd.DataFrame({"person": p.person[mask], "item": p.item[mask], "day": p.day[mask]})
    days = df.drop_duplicates().groupby(["item", "person"]).size()
    per_item = (days >= 2).groupby(level="item").mean()
    rates = np.zeros(len(p.items))
    rates[per_item.index.to_numpy()] = per_item.to_numpy()
    return rates


def excludable(policy: Exclude, rates: np.ndarray, threshold: float) -> np.ndarray:
    """Per product code: True where a product the person bought is left out of their ranking."""
    if policy == "auto":
        return rates < threshold
    return np.full(len(rates), bool(policy))


# -- models ---------------------------------------------------------------------------------------
class ItemModel:
    """A model as an item x item weight matrix W (or, for popularity, one score per item):
    a person's scores are their purchase row times W. `tau` (days): each product of the history
    weighs exp(-age / tau) instead of 1 (the history must then carry ages, see `history`)."""

    def __init__(self, name: str, params: dict, weights: np.ndarray | None, popularity: np.ndarray) -> None:
        self.name, self.params, self.weights, self.popularity = name, params, weights, popularity

    @property
    def tau(self) -> float | None:
        return self.params.get("tau")

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        if self.weights is None:
            return np.broadcast_to(self.popularity, (history.shape[0], len(self.popularity))).copy()
        out = np.asarray(history @ self.weights)
        # people with no history here get the best sellers, scaled below any learnt score
        empty = np.asarray(history.sum(axis=1)).ravel() == 0
        if empty.any():
            out[empty] = self.popularity / (self.popularity.max() or 1.0) * 1e-6
        return out


def history(rows: np.ndarray, items: np.ndarray, age_days: np.ndarray, shape: tuple[int, int],
            tau: float | None) -> sp.csr_matrix:
    """People's purchase rows: 1 per product bought, or with `tau` the most recent purchase's
    exp(-age / tau)."""
    weight = np.ones(len(rows), np.float32) if tau is None else np.exp(-age_days / tau).astype(np.float32)
    df = pd.DataFrame({"r": rows, "i": items, "w": weight}).groupby(["r", "i"], sort=False)["w"].max()
    r, i = (df.index.get_level_values(k).to_numpy() for k in ("r", "i"))
    return sp.csr_matrix((df.to_numpy(), (r, i)), shape=shape)


def fit(name: str, params: dict, X: sp.csr_matrix) -> ItemModel:
    popularity = np.asarray(X.sum(axis=0)).ravel().astype(np.float64)
    if name == "popularity":
        return ItemModel(name, params, None, popularity)
    gram = (X.T @ X).toarray().astype(np.float64)
    if name == "cosine":
        norms = np.sqrt(np.diag(gram))
        weights = gram / (np.outer(norms, norms) + params["shrink"] + 1e-12)
        np.fill_diagonal(weights, 0.0)
        return ItemModel(name, params, weights, popularity)
    if name in ("ease", "ease_recency"):
        g = gram.copy()
        g[np.diag_indices_from(g)] += params["lambda"]
        p = np.linalg.inv(g)
        weights = -p / np.diag(p)
        np.fill_diagonal(weights, 0.0)
        return ItemModel(name, params, weights, popularity)
    raise ValueError(f"unknown model {name}")


def candidates(config: RecommendConfig) -> list[tuple[str, dict]]:
    return ([("popularity", {})] + [("cosine", {"shrink": s}) for s in config.cosine_shrinks]
            + [("ease", {"lambda": lam}) for lam in config.ease_lambdas])


# -- evaluation -----------------------------------------------------------------------------------
@dataclass
class Split:
    fit: np.ndarray            # mask of purchase lines the models are fitted on (up to the cutoff)
    users: np.ndarray          # person codes judged
    held: list[np.ndarray]     # per judged person: the held-out product codes
    rows: np.ndarray           # their history lines: row (index into users), product, age in days
    items: np.ndarray
    ages: np.ndarray
    cutoff: dt.date
    end: dt.date

    def history(self, n_items: int, tau: float | None = None) -> sp.csr_matrix:
        return history(self.rows, self.items, self.ages, (len(self.users), n_items), tau)


def time_split(p: Purchases, cutoff: dt.date, end: dt.date, max_users: int = 20_000) -> Split:
    """Fit on the lines up to `cutoff`; judge the people who bought in (cutoff, end] and before
    their last purchase day there: that day's products are held out, what they bought before it
    is their history."""
    day = p.day
    cut, stop = np.datetime64(cutoff, "D"), np.datetime64(end, "D")
    window = (day > cut) & (day <= stop)
    last = pd.Series(day[window]).groupby(p.person[window]).max()
    first = pd.Series(day).groupby(p.person).min()
    judged = last.index[(first.reindex(last.index) < last).to_numpy()].to_numpy()
    if len(judged) == 0:
        raise DataTooSmall(f"nobody bought both before and after {cutoff} and by {end} on two different "
                           "days, so no purchase can be held out to judge a recommender; load more "
                           "history or raise holdout_days in recommend.yml")
    if len(judged) > max_users:
        judged = np.sort(np.random.default_rng(SEED).choice(judged, max_users, replace=False))
    row_of = np.full(len(p.people), -1)
    row_of[judged] = np.arange(len(judged))
    held_day = np.full(len(p.people), np.datetime64("NaT"), "datetime64[D]")
    held_day[judged] = last.reindex(judged).to_numpy().astype("datetime64[D]")
    mine = row_of[p.person] >= 0
    before = mine & (day < held_day[p.person])
    at_held = mine & (day == held_day[p.person])
    groups = pd.Series(p.item[at_held]).groupby(row_of[p.person[at_held]]).unique()
    ages = (held_day[p.person[before]] - day[before]).astype(np.float64)
    return Split(fit=day <= cut, users=judged, held=[np.asarray(groups[r]) for r in range(len(judged))],
                 rows=row_of[p.person[before]], items=p.item[before], ages=ages, cutoff=cutoff, end=end)


def top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best columns of each row, best first, ties by column number: what a stable argsort
    gives, at the cost of a partial sort (the evaluation ranks every product for every judged
    person, and a full sort of each row is most of its time on a large catalogue)."""
    rows, n = scores.shape
    if k >= n or rows == 0:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = np.partition(scores, n - k, axis=1)[:, n - k]  # each row's k-th largest
    r, c = np.nonzero(scores >= kth[:, None])           # at least k per row; more on ties
    order = np.lexsort((c, -scores[r, c], r))
    r, c = r[order], c[order]
    rank = np.arange(len(r)) - np.searchsorted(r, np.arange(rows))[r]
    return c[rank < k].reshape(rows, k)


def evaluate(model: ItemModel, split: Split, n_items: int, exclude: np.ndarray | None = None,
             pool: np.ndarray | None = None) -> dict:
    """HR@K, recall@K and NDCG@K over the full ranking of the pool (every product by default).
    `exclude` (per product): the products of a person's history that leave their ranking, and
    their held-out products that are not counted; people with nothing left are not judged."""
    ks = max(KS)
    hits = {k: [] for k in KS}
    recall = {k: [] for k in KS}
    ndcg = {k: [] for k in KS}
    X = split.history(n_items, model.tau)
    seen = split.history(n_items) if exclude is not None and exclude.any() else None
    for start in range(0, len(split.users), CHUNK):
        scores = model.scores(X[start:start + CHUNK])
        if pool is not None:
            masked = np.full_like(scores, -np.inf)
            masked[:, pool] = scores[:, pool]
            scores = masked
        block = None
        if seen is not None:
            block = sp.csr_matrix(seen[start:start + CHUNK].multiply(exclude[None, :].astype(np.float32)))
            block.eliminate_zeros()
            r, c = block.nonzero()
            scores[r, c] = -np.inf
        top = top_columns(scores, ks)
        for row, held in enumerate(split.held[start:start + CHUNK]):
            if block is not None:
                gone = block.indices[block.indptr[row]:block.indptr[row + 1]]
                held = np.setdiff1d(held, gone)
                if len(held) == 0:
                    continue
            ranks = {item: r for r, item in enumerate(top[row]) if np.isfinite(scores[row, item])}
            for k in KS:
                found = [ranks[i] for i in held if i in ranks and ranks[i] < k]
                hits[k].append(1.0 if found else 0.0)
                recall[k].append(len(found) / len(held))
                ideal = sum(1 / np.log2(i + 2) for i in range(min(len(held), k)))
                ndcg[k].append(sum(1 / np.log2(r + 2) for r in found) / ideal)
    judged = len(hits[KS[0]])
    return {**{f"hr@{k}": float(np.mean(hits[k])) if judged else 0.0 for k in KS},
            **{f"recall@{k}": float(np.mean(recall[k])) if judged else 0.0 for k in KS},
            **{f"ndcg@{k}": float(np.mean(ndcg[k])) if judged else 0.0 for k in KS},
            "people": judged}


def judge(model: ItemModel, split: Split, n_items: int, exclude: np.ndarray) -> dict:
    """The figures with the policy's exclusion, and HR@10/NDCG@10 with bought products included."""
    main = evaluate(model, split, n_items, exclude)
    included = evaluate(model, split, n_items) if exclude.any() else main
    return {**main, "hr@10 incl": included["hr@10"], "ndcg@10 incl": included["ndcg@10"]}


# -- training -------------------------------------------------------------------------------------
@dataclass
class Training:
    version: int
    chosen: tuple[str, dict]
    tuning: pd.DataFrame          # every candidate on the tuning split
    test: pd.DataFrame            # the tuned models on the later split
    graph: pd.DataFrame           # top products by sales and their strongest links
    nodes: pd.DataFrame
    people: int
    products: int
    as_of: dt.date
    exclude: Exclude = "auto"
    source: str = ""              # which purchases, in words
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def train(wh, config: RecommendConfig | None = None, progress=None, activate: bool = True) -> Training:
    """Tune, choose, judge and refit; the version becomes active when `activate` and it beats
    the best sellers on HR@10 (a warning says so otherwise)."""
    started = time.perf_counter()
    config = config or load_config()
    step = progress or (lambda text: None)
    used = purchases.source(wh)
    step(f"reading purchases: {used.describe()}, {used.as_of()}")
    p = read_purchases(wh, config)
    if len(p.people) < config.min_users or len(p.items) < 10:
        raise DataTooSmall(f"{len(p.people):,} buyers and {len(p.items):,} products in the lookback "
                           f"window; recommendation needs at least {config.min_users:,} buyers "
                           f"(min_users in {CONFIG_FILE.name}) and 10 products")
    w = dt.timedelta(days=config.holdout_days)
    test = time_split(p, p.as_of - w, p.as_of, config.evaluation_users)
    tune = time_split(p, p.as_of - 2 * w, p.as_of - w, config.evaluation_users)
    if len(tune.users) < 50 or len(test.users) < 50:
        raise DataTooSmall(f"only {min(len(tune.users), len(test.users)):,} people bought both before and "
                           f"within a {config.holdout_days}-day window after a cutoff; evaluating a "
                           "recommender needs at least 50 (raise holdout_days in recommend.yml, or load "
                           "more history)")
    n = len(p.items)
    rows = []
    X_tune = p.matrix(tune.fit)
    tune_exclude = excludable(config.exclude_purchased, repeat_rates(p, tune.fit), config.repeat_threshold)
    for name, params in candidates(config):
        step(f"tuning {name} {params}")
        model = fit(name, params, X_tune)
        rows.append({"model": name, "params": json.dumps(params), **evaluate(model, tune, n, tune_exclude)})
        if name == "ease":
            for tau in config.recency_days:
                recent = ItemModel("ease_recency", {**params, "tau": tau}, model.weights, model.popularity)
                rows.append({"model": "ease_recency", "params": json.dumps(recent.params),
                             **evaluate(recent, tune, n, tune_exclude)})
    tuning = pd.DataFrame(rows)
    best = {name: json.loads(group.sort_values("ndcg@10", ascending=False, kind="stable").iloc[0]["params"])
            for name, group in tuning.groupby("model")}
    chosen_row = tuning.sort_values("ndcg@10", ascending=False, kind="stable").iloc[0]
    chosen = (chosen_row["model"], json.loads(chosen_row["params"]))
    X_test = p.matrix(test.fit)
    test_exclude = excludable(config.exclude_purchased, repeat_rates(p, test.fit), config.repeat_threshold)
    rows = []
    for name in [m for m in ("popularity", "cosine", "ease", "ease_recency") if m in best]:
        step(f"testing {name}")
        rows.append({"model": name, "params": json.dumps(best[name]),
                     **judge(fit(name, best[name], X_test), test, n, test_exclude)})
    test_table = pd.DataFrame(rows)
    step(f"fitting {chosen[0]} on every purchase")
    X = p.matrix()
    final = fit(*chosen, X)
    rates = repeat_rates(p)
    nodes, graph = association_graph(p, X)
    warnings = []
    pop = test_table.set_index("model").loc["popularity", "hr@10"]
    mine = test_table.set_index("model").loc[chosen[0], "hr@10"]
    if mine <= pop:
        warnings.append(f"the chosen {chosen[0]} model's HR@10 {mine:.3f} does not beat the best "
                        f"sellers' {pop:.3f}; the version is not made active")
    version = _store(wh, config, final, p, rates, tuning, test_table, chosen,
                     active=activate and not warnings)
    if used.stale():  # said, but not a reason to keep the version inactive
        warnings.append(used.stale())
    t = Training(version=version, chosen=chosen, tuning=tuning, test=test_table, graph=graph,
                 nodes=nodes, people=len(p.people), products=len(p.items), as_of=p.as_of,
                 exclude=config.exclude_purchased, source=f"{used.describe()}, {used.as_of()}",
                 warnings=warnings)
    t.seconds = time.perf_counter() - started
    return t


def association_graph(p: Purchases, X: sp.csr_matrix, top: int = 10, links: int = 3):
    """The top products by purchases and, for each, its `links` strongest co-purchase links
    (cosine, 0-1)."""
    counts = np.bincount(p.item, minlength=len(p.items))
    gram = (X.T @ X).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(gram))
    cos = gram / (np.outer(norms, norms) + 1e-12)
    np.fill_diagonal(cos, 0.0)
    heads = np.argsort(-counts, kind="stable")[:top]
    edges = []
    for h in heads:
        for j in np.argsort(-cos[h], kind="stable")[:links]:
            edges.append({"from": p.items[h], "to": p.items[j], "weight": float(cos[h, j])})
    graph = pd.DataFrame(edges)
    names = sorted(set(graph["from"]) | set(graph["to"]))
    nodes = pd.DataFrame({"item_id": names, "purchases": [int(counts[np.searchsorted(p.items, n)])
                                                          for n in names],
                          "top": [n in set(p.items[heads]) for n in names]})
    return nodes, graph


# -- versions and tasks ---------------------------------------------------------------------------
def _store(wh, config, model: ItemModel, p: Purchases, rates: np.ndarray, tuning, test, chosen,
           active: bool) -> int:
    from ml.repurchase import save_version

    metrics = {"chosen": {"model": chosen[0], "params": chosen[1]},
               "exclude_purchased": config.exclude_purchased,
               "test": test.to_dict(orient="records"), "tuning": tuning.to_dict(orient="records")}
    return save_version(wh, MODEL, {"model": model, "items": p.items, "repeat_rates": rates},
                        config.model_dump_json(),
                        {"as_of": str(p.as_of), "lookback_days": config.lookback_days,
                         "holdout_days": config.holdout_days}, metrics,
                        int(len(p.person)), active=active)


@dataclass
class TaskResult:
    task: str
    users: int
    products: int
    top: int
    single_product: bool
    rows: int
    version: int


def run_task(wh, task: Task, config: RecommendConfig | None = None,
             pools: dict[str, CompiledPool] | None = None) -> TaskResult:
    """Recommend the top `task.top` products of the pool to every member of the audience with
    a purchase in the lookback window; a one-product pool gives each a 0-1 preference instead."""
    from ml.repurchase import VERSIONS_TABLE
    MEMBERS, VERSIONS = op.AUDIENCE_MEMBERS.relation, op.AUDIENCE_VERSIONS.relation

    config = config or load_config()
    pools = pools if pools is not None else load_pools()
    if task.pool not in pools:
        raise UserError(f"task {task.name}: unknown pool {task.pool!r}; the pools are "
                        f"{', '.join(sorted(pools)) or 'none (add ml/pools/<name>.yml)'}")
    with wh.connect() as conn, wh.state_connection(conn) as state_conn:
        wh.ensure_schema(conn)
        active = wh.state.execute(state_conn, f"select version, artefact from {VERSIONS_TABLE} "
                                              "where model = %s and active", [MODEL])
        version = wh.state.execute(state_conn, f"select max(version) from {VERSIONS} "
                                               "where audience = %s and kept", [task.audience])[0][0]
    if not active:
        raise UserError("no active recommendation model: train one (oa ml train recommend)")
    if version is None:
        raise UserError(f"task {task.name}: audience {task.audience} has no built version; build it "
                        f"first (oa audience build {task.audience})")
    members = [r[0] for r in wh.query(f"select distinct one_id from {MEMBERS} where audience = %s and "
                                      "version = %s and one_id is not null", [task.audience, version])]
    bundle = pickle.loads((wh.settings.home / active[0][1]).read_bytes())  # noqa: S301 - our artefact
    model: ItemModel = bundle["model"]
    items: np.ndarray = bundle["items"]
    wanted = set(pool_items(wh, pools[task.pool]))
    pool = np.flatnonzero(pd.Series(items).isin(wanted).to_numpy())
    p = read_purchases(wh, config)
    # hashed membership: numpy's isin compares object arrays element by element
    known = pd.Series(p.people).isin(set(members)).to_numpy()
    if len(members) * max(len(pool), 1) > config.max_pairs:
        raise UserError(f"task {task.name}: {len(members):,} people x {len(pool):,} products is above "
                        f"max_pairs {config.max_pairs:,} in {CONFIG_FILE.name}; narrow the audience or "
                        "the pool")
    if not known.any():
        raise UserError(f"task {task.name}: no member of {task.audience} bought anything in the "
                        f"last {config.lookback_days} days, so there is nobody to recommend to")
    if len(pool) == 0:
        raise UserError(f"task {task.name}: no product of pool {task.pool} was bought in the last "
                        f"{config.lookback_days} days, so there is nothing to recommend")
    # the person's purchases over the model's products (products new since training drop out)
    code = {item: i for i, item in enumerate(items)}
    mapped = np.array([code.get(i, -1) for i in p.items])
    keep = known[p.person] & (mapped[p.item] >= 0)
    people = np.flatnonzero(known)
    row_of = np.full(len(p.people), -1)
    row_of[people] = np.arange(len(people))
    ages = (np.datetime64(p.as_of, "D") - p.day[keep]).astype(np.float64)
    X = history(row_of[p.person[keep]], mapped[p.item[keep]], ages, (len(people), len(items)), model.tau)
    single = len(pool) == 1
    policy = config.exclude_purchased if task.exclude_purchased is None else task.exclude_purchased
    rates = bundle.get("repeat_rates")
    if rates is None:  # a version trained before repeat rates were kept: auto leaves out all
        rates = np.zeros(len(items))
    bought = None
    if not single and excludable(policy, rates, config.repeat_threshold)[pool].any():
        # what each person ever bought (not only in the lookback window), among the pool's
        # products that the policy leaves out
        out_of = excludable(policy, rates, config.repeat_threshold)
        pairs = bought_before(wh, list(p.people[people]), p.as_of)
        person_row = pd.Series(np.arange(len(people)), index=p.people[people])
        cols = pairs["item_id"].map(code)
        ok = cols.notna().to_numpy()
        r = person_row.reindex(pairs["one_id"][ok]).to_numpy()
        c = cols[ok].to_numpy().astype(np.int64)
        keep_pair = out_of[c]
        bought = sp.csr_matrix((np.ones(int(keep_pair.sum()), np.float32), (r[keep_pair], c[keep_pair])),
                               shape=(len(people), len(items)))[:, pool].tocsr()
    top = 1 if single else min(task.top, len(pool))
    parts: list[pd.DataFrame] = []
    all_scores = []
    for start in range(0, len(people), CHUNK):
        scores = model.scores(X[start:start + CHUNK])[:, pool]
        if single:
            all_scores.append(scores[:, 0])
            continue
        if bought is not None:
            r, c = bought[start:start + len(scores)].nonzero()
            scores[r, c] = -np.inf
        if top < scores.shape[1]:
            part = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        else:
            part = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
        picked = np.take_along_axis(scores, part, axis=1)
        # rank by score, ties by product order, as a stable sort would
        order = np.lexsort((part, -picked), axis=1)
        part, picked = np.take_along_axis(part, order, axis=1), np.take_along_axis(picked, order, axis=1)
        rows = np.repeat(np.arange(len(scores)), top)
        frame = pd.DataFrame({"one_id": p.people[people[start + rows]], "item_id": items[pool[part.ravel()]],
                              "rank": np.tile(np.arange(1, top + 1), len(scores)),
                              "score": picked.ravel()})
        parts.append(frame[np.isfinite(frame["score"].to_numpy())])  # bought products left out
    if single:  # a preference index: the person's percentile among the audience, 0-1
        s = np.concatenate(all_scores)
        preference = (pd.Series(s).rank(method="average").to_numpy() - 1) / max(len(s) - 1, 1)
        out = {"one_id": list(p.people[people]), "item_id": [items[pool[0]]] * len(people),
               "rank": [1] * len(people), "score": list(preference)}
    else:
        frame = pd.concat(parts) if parts else pd.DataFrame(columns=["one_id", "item_id", "rank", "score"])
        out = {k: frame[k].tolist() for k in ("one_id", "item_id", "rank", "score")}
    n = len(out["one_id"])
    table = pa.table({"task": pa.array([task.name] * n, pa.string()),
                      "pool": pa.array([task.pool] * n, pa.string()),
                      "one_id": pa.array(out["one_id"], pa.string()),
                      "item_id": pa.array(out["item_id"], pa.string()),
                      "rank": pa.array(out["rank"], pa.int32()),
                      "score": pa.array(out["score"], pa.float64()),
                      "model": pa.array([model.name] * n, pa.string()),
                      "model_version": pa.array([int(active[0][0])] * n, pa.int32()),
                      "as_of_date": pa.array([p.as_of] * n, pa.date32()),
                      "made_at": pa.array([dt.datetime.now(dt.UTC).replace(tzinfo=None)] * n,
                                          pa.timestamp("us"))})
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.delete_rows(conn, RECOMMENDATIONS_TABLE, "task", [task.name])
        wh.insert_arrow(conn, RECOMMENDATIONS_TABLE, table)
    return TaskResult(task=task.name, users=len(people), products=len(pool), top=top,
                      single_product=single, rows=n, version=int(active[0][0]))


def run_tasks(wh, config, names: list[str] | None = None, step=None) -> list:
    """Refresh the pools' products, then run the tasks of ml/recommend.yml (all, or those named)."""
    pools = load_pools()
    write_pool_items(wh, pools)
    known = {t.name: t for t in config.tasks}
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown task {name!r}; the tasks of ml/recommend.yml are "
                            f"{', '.join(known) or 'none'}")
    results = []
    for t in config.tasks:
        if names and t.name not in names:
            continue
        if step:
            step(f"task {t.name}")
        results.append(run_task(wh, t, config, pools))
    return results
