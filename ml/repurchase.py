"""Repurchase prediction: the probability that a person buys again within the horizon.

The features come from dbt (`marts.ml_repurchase_features`, one row per cutoff and predictable
person, every feature reading purchases on or before its cutoff). To them Python adds what the
BG/NBD model knows: fitted at each cutoff on that cutoff's people (their purchases up to it),
their expected purchases in the horizon and P(alive); and recency against the person's own
rhythm (days since the last purchase over their average interval).

Three candidates: gradient boosting (calibrated on whole training cutoffs left out in turn),
logistic regression on standardised features, and BG/NBD itself (its expected purchases made a
probability). They are fitted on the older training cutoffs and chosen by AUC on the latest one
(held out in time); the chosen one is then fitted on every training cutoff. The `validate`
cutoff, whose labels no training row saw, judges it against every candidate and three baselines
(BG/NBD, a recency/frequency heuristic, logistic regression on RFM), and checks its calibration
(Brier score, expected calibration error; a gap there is a caution, since a base rate that moved
since training, as in a season, shows there). A version that a baseline beats is not made
active. Each training is a model version (config, data window, metrics, the fitted model)
in `ml.model_versions`; scoring uses the active version and writes `ml.repurchase_scores`.

The configuration is the dbt model's `config.meta.repurchase` (models/marts/ml/_ml__models.yml),
read from the manifest, so the features and the model agree on it.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml import bgnbd, purchases
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.schema import operational as op
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import FileErrors, Problem, line_of, read_yaml, validate_model

FEATURES = ("avg_amount", "max_amount", "min_amount", "total_amount", "purchase_count", "purchases_7d",
            "purchases_30d", "purchases_90d", "days_since_first", "days_since_last", "purchase_days",
            "channels", "avg_interval", "repurchase_ratio", "categories", "spend_trend", "r_score",
            "f_score", "m_score")
CATEGORICAL = ("main_category",)
FEATURES_TABLE = "marts.ml_repurchase_features"
VERSIONS_TABLE = op.MODEL_VERSIONS.relation
SCORES_TABLE = op.REPURCHASE_SCORES.relation
MODEL = "repurchase"
TOP_SHARES = (0.05, 0.25, 0.50)
RANDOM_SEED = 20_240_601


class DataTooSmall(UserError):
    """Too little data for a model worth trusting; the message says what is missing."""


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(0.08, gt=0, le=1)
    max_iter: int = Field(250, ge=10, le=5000)
    max_leaf_nodes: int = Field(31, ge=2, le=1024)
    calibration: str = Field("isotonic", pattern="^(isotonic|sigmoid)$")
    min_users: int = Field(500, ge=50)
    drift_warning: float = Field(0.2, gt=0, le=10)
    calibration_warning: float = Field(0.05, gt=0, le=1)
    """warn when the expected calibration error on the validation cutoff is above this"""
    importance_sample: int = Field(5_000, ge=500, le=1_000_000)
    """validation people the permutation importance reads (it predicts them three times per
    feature: a sample keeps training minutes short, and the ranking it reports stays put)"""


class RepurchaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purchase_type: str = Field("purchase", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    purchase_source: Literal["auto", "behaviors", "orders"] = "auto"
    horizon_days: int = Field(30, ge=15, le=365)
    lookback_days: int = Field(365, ge=30, le=36_500)
    training_cutoffs: int = Field(3, ge=1, le=24)
    cutoff_step_days: int | None = Field(None, ge=7, le=365)
    """days between training cutoffs; default horizon_days"""
    model: ModelSettings = ModelSettings()

    @classmethod
    def stored(cls, text: str) -> RepurchaseConfig:
        """A version's stored configuration; versions trained before one as-of per run kept an
        as_of key, which nothing reads now."""
        data = json.loads(text)
        data.pop("as_of", None)
        return cls.model_validate(data)


AS_OF_MOVED = ("as_of is gone: a run has one as-of date, the --as-of of oa build and oa nightly (the dbt var "
               "as_of), and both models take T, the day of the latest purchase on or before it "
               "(marts.ml_reference_date); remove as_of here")
PROPERTIES = "models/marts/ml/_ml__models.yml"
FEATURES_MODEL = "ml_repurchase_features"


class PropertiesErrors(FileErrors, ConfigError):
    """Problems of the properties file that holds meta.repurchase, each at its line."""


def check_properties(path: Path = PROJECT_ROOT / PROPERTIES) -> RepurchaseConfig:
    """meta.repurchase as written in the properties file, checked at its lines. dbt reads the
    file with a loader that lets a duplicate key silently win, and the manifest keeps no lines;
    so the file is checked first, with the project's loader."""
    data, lines = read_yaml(path, PropertiesErrors, "a dbt properties file (version: 2, models: [...])")
    models = data.get("models")
    found = [i for i, m in enumerate(models if isinstance(models, list) else [])
             if isinstance(m, dict) and m.get("name") == FEATURES_MODEL]
    if not found:
        raise PropertiesErrors([Problem(path, line_of(lines, ("models",)), "models",
                                        f"no model named {FEATURES_MODEL}; it holds meta.repurchase")])
    section = models[found[0]]
    for key in ("config", "meta", "repurchase"):
        section = section.get(key) if isinstance(section, dict) else None
    at = ("models", found[0], "config", "meta", "repurchase")
    if isinstance(section, dict) and "as_of" in section:
        raise PropertiesErrors([Problem(path, line_of(lines, (*at, "as_of")), "meta.repurchase.as_of",
                                        AS_OF_MOVED)])
    return validate_model(RepurchaseConfig, section or {}, path, lines, PropertiesErrors, at)


def load_config(manifest: dict | None = None) -> RepurchaseConfig:
    """meta.repurchase of ml_repurchase_features, from the dbt manifest (the properties file is
    checked first, when the manifest is the project's)."""
    if manifest is None:
        check_properties()  # before importing dagster-dbt, which takes seconds
        from openaudience.core.dbt import ensure_manifest

        manifest = json.loads(ensure_manifest().read_text())
    node = manifest["nodes"].get("model.openaudience.ml_repurchase_features")
    if node is None:
        raise ConfigError("the dbt model ml_repurchase_features is missing from the project")
    block = (node["config"].get("meta") or {}).get("repurchase") or {}
    if isinstance(block, dict) and "as_of" in block:
        raise ConfigError(f"{PROPERTIES}: ml_repurchase_features: meta.repurchase.{AS_OF_MOVED}")
    try:
        return RepurchaseConfig.model_validate(block)
    except ValidationError as exc:
        problems = "; ".join(f"meta.repurchase.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"{PROPERTIES}: ml_repurchase_features: {problems}") from None


def matrix(df: pd.DataFrame, vocabulary: dict[str, list[str]]) -> np.ndarray:
    """The numeric features, then each categorical one as its code in `vocabulary` (NaN for a
    value training never saw): what versions trained before the candidates read."""
    return np.hstack([df[list(FEATURES)].to_numpy(float), _codes(df, vocabulary)])


# -- what Python adds to the SQL features -----------------------------------------------------------
ENGINEERED = ("bg_expected", "bg_p_alive", "recency_vs_rhythm")
CANDIDATES = ("gboost", "logistic", "bgnbd")
BASELINES = ("bgnbd", "heuristic", "rfm_logistic")  # what the chosen model must beat


def engineer(df: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """The features plus ENGINEERED: BG/NBD fitted at each cutoff on that cutoff's rows (which
    see purchases up to the cutoff only), their expected purchases in the horizon and P(alive);
    and days since the last purchase over the person's average interval."""
    out = df.copy()
    out["bg_expected"] = np.nan
    out["bg_p_alive"] = np.nan
    for _, index in df.groupby("cutoff_date", sort=True).groups.items():
        part = df.loc[index]
        x, t_x, T = bgnbd_inputs(part)
        bg = bgnbd.fit(x, t_x, T)
        out.loc[index, "bg_expected"] = bg.expected_purchases(horizon, x, t_x, T)
        out.loc[index, "bg_p_alive"] = bg.p_alive(x, t_x, T)
    interval = df["avg_interval"].astype(float)
    out["recency_vs_rhythm"] = df["days_since_last"].astype(float) / interval.where(interval > 0)
    return out


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class Scorer:
    """A fitted candidate: `kind` (gboost, logistic or bgnbd), the columns it reads and its
    estimator; `predict(df)` takes feature rows as read from the table."""

    kind: str
    horizon: int
    vocabulary: dict[str, list[str]]
    estimator: object = None

    @property
    def columns(self) -> list[str]:
        if self.kind == "bgnbd":
            return ["bg_expected"]
        return [*FEATURES, *ENGINEERED, *CATEGORICAL]

    def matrix(self, eng: pd.DataFrame) -> np.ndarray:
        numeric = [*FEATURES, *ENGINEERED]
        if self.kind == "bgnbd":
            return np.log1p(eng[["bg_expected"]].to_numpy(float))
        if self.kind == "gboost":  # the booster takes categories as codes
            return np.hstack([eng[numeric].to_numpy(float), _codes(eng, self.vocabulary)])
        parts = [_signed_log(eng[numeric].to_numpy(float))]
        for name in CATEGORICAL:  # one-hot for the linear model
            codes = _codes(eng, self.vocabulary, (name,)).ravel()
            onehot = np.zeros((len(eng), len(self.vocabulary[name])))
            known = ~np.isnan(codes)
            onehot[np.flatnonzero(known), codes[known].astype(int)] = 1.0
            parts.append(onehot)
        return np.hstack(parts)

    def fit(self, eng: pd.DataFrame, settings: ModelSettings, calibrate: bool = True) -> Scorer:
        """Fit on the rows of `eng`; `calibrate=False` leaves the booster uncalibrated (for a
        ranking only: AUC does not need it)."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = self.matrix(eng), eng["label"].astype(int).to_numpy()
        if self.kind == "gboost":
            booster = HistGradientBoostingClassifier(
                learning_rate=settings.learning_rate, max_iter=settings.max_iter,
                max_leaf_nodes=settings.max_leaf_nodes, early_stopping=True, validation_fraction=0.15,
                random_state=RANDOM_SEED, categorical_features=[X.shape[1] - 1 - i for i in
                                                                 range(len(CATEGORICAL))])
            if not calibrate:
                self.estimator = booster.fit(X, y)
                return self
            cutoffs = eng["cutoff_date"].to_numpy()
            groups = np.unique(cutoffs)
            # calibrated on whole cutoffs left out in turn, not on rows of the cutoffs it learnt
            folds = ([(np.flatnonzero(cutoffs != g), np.flatnonzero(cutoffs == g)) for g in groups]
                     if len(groups) >= 2 else 3)
            self.estimator = CalibratedClassifierCV(booster, method=settings.calibration, cv=folds).fit(X, y)
        elif self.kind == "logistic":
            self.estimator = make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                                         keep_empty_features=True),
                                           StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            self.estimator.fit(X, y)
        else:  # BG/NBD's expected purchases, made a probability (monotone: its ranking stays)
            self.estimator = LogisticRegression(max_iter=1000).fit(np.nan_to_num(X), y)
        return self

    def predict_engineered(self, eng: pd.DataFrame) -> np.ndarray:
        X = self.matrix(eng)
        if self.kind == "bgnbd":
            X = np.nan_to_num(X)
        return self.estimator.predict_proba(X)[:, 1]

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.predict_engineered(engineer(df, self.horizon))


def _codes(df: pd.DataFrame, vocabulary: dict[str, list[str]],
           names: tuple[str, ...] = CATEGORICAL) -> np.ndarray:
    """Each categorical column of `names` as its code in `vocabulary` (NaN for a value training
    never saw)."""
    parts = []
    for name in names:
        codes = {v: i for i, v in enumerate(vocabulary[name])}
        parts.append(df[name].map(codes).to_numpy(float).reshape(-1, 1))
    return np.hstack(parts)


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Brier score, and the expected calibration error over `bins` equal-count bins (the mean
    |predicted - observed| weighted by bin size)."""
    order = np.argsort(p, kind="stable")
    ece = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            ece += len(chunk) / len(p) * abs(p[chunk].mean() - y[chunk].mean())
    return {"brier": float(np.mean((p - y) ** 2)), "ece": float(ece)}


# -- baselines ------------------------------------------------------------------------------------
def heuristic_score(df: pd.DataFrame) -> np.ndarray:
    """Recency and frequency: recent, frequent buyers first (the RFM rule of thumb)."""
    recency = 1.0 / (1.0 + df["days_since_last"].to_numpy(float))
    frequency = (np.log1p(df["purchases_90d"].to_numpy(float))
                 + 0.5 * np.log1p(df["purchase_count"].to_numpy(float)))
    return recency * (1.0 + frequency)


RFM = ("days_since_last", "purchase_days", "purchase_count", "total_amount", "avg_amount")


def rfm_logistic(train_df: pd.DataFrame, valid: pd.DataFrame) -> np.ndarray:
    """The plain baseline: logistic regression on recency, frequency and monetary value (log,
    standardised), fitted on the training rows; the validation rows' probabilities."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                          LogisticRegression(max_iter=1000))
    model.fit(_signed_log(train_df[list(RFM)].to_numpy(float)), train_df["label"].astype(int).to_numpy())
    return model.predict_proba(_signed_log(valid[list(RFM)].to_numpy(float)))[:, 1]


def bgnbd_inputs(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(repeat purchase days, last purchase day, age) since the first purchase, in days."""
    x = np.maximum(df["purchase_days"].to_numpy(float) - 1, 0)
    T = df["days_since_first"].to_numpy(float)
    t_x = T - df["days_since_last"].to_numpy(float)
    return x, np.where(x > 0, t_x, 0.0), T


# -- metrics --------------------------------------------------------------------------------------
def top_share_table(y: np.ndarray, score: np.ndarray, seed: int = RANDOM_SEED) -> pd.DataFrame:
    """Precision and recall of the top 5/25/50 % by score, and of a random group of the same
    size from the same people (the manual's chart), with the lift."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-score, kind="stable")
    buyers = max(int(y.sum()), 1)
    rows = []
    for share in TOP_SHARES:
        m = max(int(round(len(y) * share)), 1)
        top = y[order[:m]].sum()
        random = y[rng.choice(len(y), m, replace=False)].sum()
        rows.append({"group": f"top {share:.0%}", "users": m,
                     "precision": top / m, "recall": top / buyers,
                     "random_precision": random / m, "random_recall": random / buyers,
                     "lift": (top / m) / max(y.mean(), 1e-12)})
    return pd.DataFrame(rows)


def evaluate(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    table = top_share_table(y, score)
    return {"auc": float(roc_auc_score(y, score)), "pr_auc": float(average_precision_score(y, score)),
            "precision_top25": float(table.loc[1, "precision"]),
            "random_precision_top25": float(table.loc[1, "random_precision"]),
            "lift_top5": float(table.loc[0, "lift"])}


# -- training -------------------------------------------------------------------------------------
@dataclass
class Training:
    version: int
    config: RepurchaseConfig
    cutoffs: dict[str, list[str]]
    rows: dict[str, int]
    metrics: dict[str, dict[str, float]]     # model (the chosen one), each candidate, heuristic
    top_shares: pd.DataFrame
    calibration: pd.DataFrame
    importance: pd.DataFrame
    validation_scores: np.ndarray
    bgnbd: bgnbd.BgNbd
    purchases: int
    source: str = ""              # which purchases, in words (ml.purchases.Source.describe)
    chosen: str = "gboost"        # the candidate chosen (CANDIDATES)
    chosen_on: str = ""           # where it was chosen
    selection: dict[str, float] = field(default_factory=dict)   # each candidate's AUC there
    warnings: list[str] = field(default_factory=list)   # why the version should not go live
    cautions: list[str] = field(default_factory=list)   # worth knowing, not a reason to hold it back
    seconds: float = 0.0


def read_features(wh, roles: tuple[str, ...]) -> pd.DataFrame:
    if not wh.table_exists("marts", "ml_repurchase_features"):
        raise UserError("marts.ml_repurchase_features is not built; run the dbt build first "
                        "(oa build, or the nightly job)")
    cols = ("cutoff_date", "cutoff_role", "one_id", *FEATURES, *CATEGORICAL, "label")
    # in batches (on Spark a partition at a time: the driver never holds the table twice); one
    # order on every engine: the same folds, the same model. The roles are our own literals.
    wanted = ", ".join("'" + role + "'" for role in roles if role in ("train", "validate", "score"))
    batches = list(wh.iter_batches(f"select {', '.join(cols)} from {FEATURES_TABLE} "
                                   f"where cutoff_role in ({wanted}) order by cutoff_date, one_id"))
    df = (pd.concat(batches, ignore_index=True) if batches else pd.DataFrame(columns=cols))[list(cols)]
    for c in FEATURES:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _check_size(df: pd.DataFrame, role: str, settings: ModelSettings) -> None:
    part = df[df["cutoff_role"] == role]
    if len(part) < settings.min_users:
        raise DataTooSmall(f"the {role} cutoff has {len(part):,} predictable people (a purchase in the "
                           f"lookback window); a repurchase model needs at least {settings.min_users:,} "
                           f"(meta.repurchase.model.min_users in {PROPERTIES}). Load more history, or "
                           f"lower training_cutoffs or horizon_days")
    labels = part["label"].astype(int)
    if labels.nunique() < 2 or labels.sum() < 20 or (1 - labels).sum() < 20:
        raise DataTooSmall(f"at the {role} cutoff {int(labels.sum()):,} of {len(part):,} predictable "
                           "people bought again within the horizon: too few of one kind to learn or "
                           "judge a model (at least 20 of each)")


def train(wh, config: RepurchaseConfig | None = None, progress=None) -> Training:
    """Choose among the candidates on the latest training cutoff, fit the chosen one on every
    training cutoff, judge it against all of them and the heuristic on the validation cutoff,
    store the version (not yet active), and return what was measured."""
    import time

    config = config or load_config()  # a configuration error before seconds of importing sklearn
    from sklearn.calibration import calibration_curve
    from sklearn.inspection import permutation_importance

    started = time.perf_counter()
    step = progress or (lambda text: None)
    used = purchases.source(wh, config.purchase_type)
    step(f"reading features: {used.describe(config.purchase_type)}, {used.as_of()}")
    df = read_features(wh, ("train", "validate"))
    for role in ("train", "validate"):
        _check_size(df, role, config.model)
    step("fitting BG/NBD at each cutoff")
    eng = engineer(df, config.horizon_days)
    train_df, valid = eng[eng["cutoff_role"] == "train"], eng[eng["cutoff_role"] == "validate"]
    # the booster takes at most 255 categories: the 254 most frequent, the rest as missing
    vocabulary = {name: sorted(str(v) for v in train_df[name].dropna().value_counts().index[:254])
                  for name in CATEGORICAL}
    yv = valid["label"].astype(int).to_numpy()
    s = config.model

    # the choice: each candidate fitted on the older training cutoffs, judged on the latest (held
    # out in time); the chosen one is then fitted on every training cutoff
    cutoffs = sorted(train_df["cutoff_date"].unique())
    selection: dict[str, float] = {}
    if len(cutoffs) >= 2:
        older = train_df[train_df["cutoff_date"] < cutoffs[-1]]
        latest = train_df[train_df["cutoff_date"] == cutoffs[-1]]
        chosen_on = f"training cutoff {cutoffs[-1]} (fitted on the {len(cutoffs) - 1} before it)"
        yl = latest["label"].astype(int).to_numpy()
        for kind in CANDIDATES:
            step(f"choosing: {kind} on the earlier cutoffs, judged on the latest")
            scorer = Scorer(kind, config.horizon_days, vocabulary).fit(older, s, calibrate=False)
            selection[kind] = evaluate(yl, scorer.predict_engineered(latest))["auc"]
    else:  # one training cutoff: nothing to hold out before validation, which then chooses
        chosen_on = f"validation cutoff {valid['cutoff_date'].iloc[0]} (one training cutoff)"

    # every candidate on every training cutoff (the chosen one calibrated), judged on validation
    def best_of(aucs: dict[str, float]) -> str:
        return max(CANDIDATES, key=lambda k: (aucs[k], -CANDIDATES.index(k)))

    chosen = best_of(selection) if selection else None
    scorers, predictions = {}, {}
    for kind in CANDIDATES:
        step(f"training {kind} on {len(train_df):,} rows")
        scorers[kind] = Scorer(kind, config.horizon_days, vocabulary).fit(
            train_df, s, calibrate=chosen is None or kind == chosen)
        predictions[kind] = scorers[kind].predict_engineered(valid)
    if chosen is None:
        selection = {kind: evaluate(yv, predictions[kind])["auc"] for kind in CANDIDATES}
        chosen = best_of(selection)
    step("validating")
    best = scorers[chosen]
    p_model = predictions[chosen]
    metrics = {"model": {**evaluate(yv, p_model), **calibration_error(yv, p_model)},
               **{kind: evaluate(yv, predictions[kind]) for kind in CANDIDATES},
               "heuristic": evaluate(yv, heuristic_score(valid)),
               "rfm_logistic": evaluate(yv, rfm_logistic(train_df, valid))}
    frac, mean = calibration_curve(yv, p_model, n_bins=10, strategy="quantile")
    calibration = pd.DataFrame({"predicted": mean, "observed": frac})
    step("permutation importance")
    sample = np.random.default_rng(RANDOM_SEED).choice(len(yv), min(len(yv), s.importance_sample),
                                                         replace=False)
    Xv = best.matrix(valid)
    if chosen == "bgnbd":
        Xv = np.nan_to_num(Xv)
    imp = permutation_importance(best.estimator, Xv[sample], yv[sample], scoring="roc_auc", n_repeats=3,
                                 random_state=RANDOM_SEED, n_jobs=1)
    names = best.columns if chosen != "logistic" else [*FEATURES, *ENGINEERED, *(
        f"{c}={v}" for c in CATEGORICAL for v in vocabulary[c])]
    importance = pd.DataFrame({"feature": names, "importance": imp.importances_mean}) \
        .sort_values("importance", ascending=False).reset_index(drop=True)
    bg = bgnbd.fit(*bgnbd_inputs(train_df))
    stored = {**metrics, "selection": {"chosen": chosen, "on": chosen_on,
                                       "auc": {k: round(v, 6) for k, v in selection.items()}}}
    version = _store_version(wh, config, {"scorer": best, "bgnbd": bg, "vocabulary": vocabulary},
                             df, stored, used.lines)
    training = Training(
        version=version, config=config,
        cutoffs={role: sorted(str(c) for c in df.loc[df["cutoff_role"] == role, "cutoff_date"].unique())
                 for role in ("train", "validate")},
        rows={"train": len(train_df), "validate": len(valid)}, metrics=metrics,
        top_shares=top_share_table(yv, p_model), calibration=calibration, importance=importance,
        validation_scores=p_model, bgnbd=bg, purchases=used.lines,
        source=f"{used.describe(config.purchase_type)}, {used.as_of()}", chosen=chosen, chosen_on=chosen_on,
        selection=selection)
    training.seconds = time.perf_counter() - started
    if used.stale():
        training.cautions.append(used.stale())
    for name in BASELINES:  # the candidates it was chosen among are reported, not rules
        if name != chosen and metrics["model"]["auc"] < metrics[name]["auc"]:
            training.warnings.append(f"the chosen {chosen} model's validation AUC "
                                     f"{metrics['model']['auc']:.3f} is below the {name} baseline's "
                                     f"{metrics[name]['auc']:.3f}")
    if metrics["model"]["ece"] > s.calibration_warning:
        training.cautions.append(f"the {chosen} model's calibration error on the validation cutoff is "
                                 f"{metrics['model']['ece']:.3f}, above calibration_warning "
                                 f"{s.calibration_warning}: its probabilities are off by that much "
                                 "on average")
    return training


# -- versions -------------------------------------------------------------------------------------
def save_version(wh, model: str, bundle: dict, config_json: str, window: dict, metrics: dict,
                 purchases: int, active: bool) -> int:
    """A new version of `model`: the fitted bundle under OA_HOME/models/<model>/ and its row in
    ml.model_versions (made the active one when `active`), in one transaction."""
    wh = wh.state  # the versions are operational state (beside a Spark warehouse, its store)
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        version = int(wh.execute(conn, f"select coalesce(max(version), 0) + 1 from {VERSIONS_TABLE} "
                                       "where model = %s", [model])[0][0])
        path = wh.settings.home / "models" / model / f"v{version:04d}.pickle"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(bundle))
        tmp.replace(path)
        if active:
            wh.execute(conn, f"update {VERSIONS_TABLE} set active = false where model = %s", [model])
        wh.execute(conn, f"insert into {VERSIONS_TABLE} (model, version, trained_at, config, "
                         "data_window, metrics, purchases, active, artefact) values "
                         "(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                   [model, version, dt.datetime.now(dt.UTC).replace(tzinfo=None), config_json,
                    json.dumps(window), json.dumps(metrics), purchases, active,
                    str(path.relative_to(wh.settings.home))])
    return version


def _store_version(wh, config, bundle: dict, df, metrics, purchases: int) -> int:
    window = {role: [str(df.loc[df["cutoff_role"] == role, "cutoff_date"].min()),
                     str(df.loc[df["cutoff_role"] == role, "cutoff_date"].max())]
              for role in ("train", "validate")}
    return save_version(wh, MODEL, bundle, config.model_dump_json(), window, metrics, purchases,
                        active=False)


def activate(wh, version: int, model: str = MODEL) -> None:
    """Make `version` of `model` (repurchase or recommend) the one in use."""
    wh = wh.state
    with wh.connect() as conn:  # one transaction
        wh.ensure_schema(conn)
        found = wh.execute(conn, f"select count(*) from {VERSIONS_TABLE} where model = %s and "
                                 "version = %s", [model, version])[0][0]
        if not found:
            raise UserError(f"no {model} model version {version}; see `oa ml models`")
        wh.execute(conn, f"update {VERSIONS_TABLE} set active = (version = %s) where model = %s",
                   [version, model])


def versions(wh, model: str = MODEL) -> list[dict]:
    cols = ("version", "trained_at", "active", "purchases", "metrics", "data_window", "config")
    wh = wh.state
    with wh.connect() as conn:
        if not wh.table_exists(op.ML_SCHEMA, op.MODEL_VERSIONS.name, conn):
            return []  # nothing trained yet
        rows = wh.execute(conn, f"select {', '.join(cols)} from {VERSIONS_TABLE} where model = %s "
                                "order by version desc", [model])
    return [dict(zip(cols, r, strict=True)) for r in rows]


def active_version(wh) -> dict | None:
    return next((v for v in versions(wh) if v["active"]), None)


# -- scoring --------------------------------------------------------------------------------------
@dataclass
class Scoring:
    version: int
    as_of: dt.date
    users: int
    warnings: list[str]
    scores: np.ndarray


def score(wh) -> Scoring:
    """Score every predictable person at the scoring cutoff with the active version and
    replace ml.repurchase_scores; warns when purchases grew past drift_warning since training."""
    active = active_version(wh)
    if active is None:
        raise UserError("no active repurchase model: train one (oa ml train repurchase) or "
                        "activate a version (oa ml activate repurchase VERSION)")
    path = wh.settings.home / wh.state.query(f"select artefact from {VERSIONS_TABLE} where "
                                             "model = %s and version = %s", [MODEL, active["version"]])[0][0]
    bundle = pickle.loads(path.read_bytes())  # noqa: S301 - our own artefact, written by train()
    df = read_features(wh, ("score",))
    if df.empty:
        raise DataTooSmall("no predictable people at the as-of date: nobody bought within the "
                           "lookback window")
    if "scorer" in bundle:
        p = bundle["scorer"].predict(df)
    else:  # a version trained before the candidates: a calibrated booster on the SQL features
        p = bundle["model"].predict_proba(matrix(df, bundle["vocabulary"]))[:, 1]
    config = RepurchaseConfig.stored(active_config(wh, active["version"]))
    used = purchases.source(wh, config.purchase_type)
    warnings = [used.stale()] if used.stale() else []
    now = used.lines
    trained = int(active["purchases"] or 0)
    if trained and (now - trained) / trained >= config.model.drift_warning:
        warnings.append(f"purchases grew {(now - trained) / trained:.0%} since version "
                        f"{active['version']} was trained ({trained:,} -> {now:,}); retrain it")
    order = np.argsort(-p, kind="stable")
    rank = np.empty(len(p), dtype=np.int64)
    rank[order] = np.arange(1, len(p) + 1)
    decile = np.minimum((rank - 1) * 10 // len(p) + 1, 10).astype(np.int32)
    as_of = df["cutoff_date"].iloc[0]
    table = pa.table({"one_id": pa.array(df["one_id"].astype(str).tolist(), pa.string()),
                      "probability": pa.array(p, pa.float64()), "rank": pa.array(rank, pa.int64()),
                      "decile": pa.array(decile, pa.int32()),
                      "model_version": pa.array(np.full(len(p), active["version"], np.int32)),
                      "as_of_date": pa.array([as_of] * len(p), pa.date32()),
                      "scored_at": pa.array([dt.datetime.now(dt.UTC).replace(tzinfo=None)] * len(p),
                                            pa.timestamp("us"))})
    with wh.connect() as conn:  # one transaction
        wh.ensure_schema(conn)
        wh.empty_table(conn, SCORES_TABLE)
        wh.insert_arrow(conn, SCORES_TABLE, table)
    return Scoring(version=int(active["version"]), as_of=as_of, users=len(p), warnings=warnings, scores=p)


def active_config(wh, version: int) -> str:
    return wh.state.query(f"select config from {VERSIONS_TABLE} where model = %s and version = %s",
                          [MODEL, version])[0][0]
