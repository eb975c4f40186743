"""Repurchase prediction: the probability that a person buys again within the horizon.

The features come from dbt (`marts.ml_repurchase_features`, one row per cutoff and predictable
person, every feature reading purchases on or before its cutoff). Training uses the `train`
cutoffs; validation uses the later `validate` cutoff, whose labels no training row saw. Every
training is compared, on the same validation rows, with two baselines: a recency/frequency
heuristic and a BG/NBD model fitted to the training cutoffs. Each training is a model version
(config, data window, metrics, the fitted model) in `ml.model_versions`; scoring uses the active
version and writes `ml.repurchase_scores`.

The configuration is the dbt model's `config.meta.repurchase` (models/marts/ml/_ml__models.yml),
read from the manifest, so the features and the model agree on it.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml import bgnbd
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


class RepurchaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purchase_type: str = "purchase"
    horizon_days: int = Field(30, ge=15, le=90)
    as_of: dt.date | None = None
    lookback_days: int = Field(365, ge=30, le=36_500)
    training_cutoffs: int = Field(3, ge=1, le=12)
    model: ModelSettings = ModelSettings()


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
    try:
        return RepurchaseConfig.model_validate((node["config"].get("meta") or {}).get("repurchase") or {})
    except ValidationError as exc:
        problems = "; ".join(f"meta.repurchase.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"{PROPERTIES}: ml_repurchase_features: {problems}") from None


def matrix(df: pd.DataFrame, vocabulary: dict[str, list[str]]) -> np.ndarray:
    """The numeric features, then each categorical one as its code in `vocabulary` (NaN for a
    value training never saw)."""
    parts = [df[list(FEATURES)].to_numpy(float)]
    for name in CATEGORICAL:
        codes = {v: i for i, v in enumerate(vocabulary[name])}
        parts.append(df[name].map(codes).to_numpy(float).reshape(-1, 1))
    return np.hstack(parts)


# -- baselines ------------------------------------------------------------------------------------
def heuristic_score(df: pd.DataFrame) -> np.ndarray:
    """Recency and frequency: recent, frequent buyers first (the RFM rule of thumb)."""
    recency = 1.0 / (1.0 + df["days_since_last"].to_numpy(float))
    frequency = (np.log1p(df["purchases_90d"].to_numpy(float))
                 + 0.5 * np.log1p(df["purchase_count"].to_numpy(float)))
    return recency * (1.0 + frequency)


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
    metrics: dict[str, dict[str, float]]     # model, heuristic, bgnbd -> metrics
    top_shares: pd.DataFrame
    calibration: pd.DataFrame
    importance: pd.DataFrame
    validation_scores: np.ndarray
    bgnbd: bgnbd.BgNbd
    purchases: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def read_features(wh, roles: tuple[str, ...]) -> pd.DataFrame:
    placeholders = ", ".join(["%s"] * len(roles))
    with wh.connect() as conn:
        if not wh.table_exists("marts", "ml_repurchase_features", conn):
            raise UserError("marts.ml_repurchase_features is not built; run the dbt build first "
                            "(oa build, or the nightly job)")
        cols = ("cutoff_date", "cutoff_role", "one_id", *FEATURES, *CATEGORICAL, "label")
        rows = wh.execute(conn, f"select {', '.join(cols)} from {FEATURES_TABLE} "
                                f"where cutoff_role in ({placeholders}) order by cutoff_date, one_id",
                          list(roles))  # one order on both engines: the same folds, the same model
    df = pd.DataFrame(rows, columns=cols)
    for c in FEATURES:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def purchase_rows(wh, config: RepurchaseConfig) -> int:
    return int(wh.query("select count(*) from marts.fct_behaviors where event_type = %s",
                        [config.purchase_type])[0][0])


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
    """Fit the model on the train cutoffs, judge it and both baselines on the validation
    cutoff, store the version (not yet active), and return what was measured."""
    import time

    config = config or load_config()  # a configuration error before seconds of importing sklearn
    from sklearn.calibration import CalibratedClassifierCV, calibration_curve
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance

    started = time.perf_counter()
    step = progress or (lambda text: None)
    step("reading features")
    df = read_features(wh, ("train", "validate"))
    for role in ("train", "validate"):
        _check_size(df, role, config.model)
    train_df, valid = df[df["cutoff_role"] == "train"], df[df["cutoff_role"] == "validate"]
    # the booster takes at most 255 categories: the 254 most frequent, the rest as missing
    vocabulary = {name: sorted(str(v) for v in train_df[name].dropna().value_counts().index[:254])
                  for name in CATEGORICAL}
    X, y = matrix(train_df, vocabulary), train_df["label"].astype(int).to_numpy()
    Xv, yv = matrix(valid, vocabulary), valid["label"].astype(int).to_numpy()
    s = config.model
    step(f"training on {len(train_df):,} rows")
    categorical = [len(FEATURES) + i for i in range(len(CATEGORICAL))]
    booster = HistGradientBoostingClassifier(learning_rate=s.learning_rate, max_iter=s.max_iter,
                                             max_leaf_nodes=s.max_leaf_nodes, early_stopping=True,
                                             validation_fraction=0.15, random_state=RANDOM_SEED,
                                             categorical_features=categorical)
    model = CalibratedClassifierCV(booster, method=s.calibration, cv=3)
    model.fit(X, y)
    step("validating")
    p_model = model.predict_proba(Xv)[:, 1]
    p_heur = heuristic_score(valid)
    bg = bgnbd.fit(*bgnbd_inputs(train_df))
    p_bg = bg.expected_purchases(config.horizon_days, *bgnbd_inputs(valid))
    metrics = {"model": evaluate(yv, p_model), "heuristic": evaluate(yv, p_heur),
               "bgnbd": evaluate(yv, p_bg)}
    frac, mean = calibration_curve(yv, p_model, n_bins=10, strategy="quantile")
    calibration = pd.DataFrame({"predicted": mean, "observed": frac})
    step("permutation importance")
    sample = np.random.default_rng(RANDOM_SEED).choice(len(yv), min(len(yv), 20_000), replace=False)
    imp = permutation_importance(model, Xv[sample], yv[sample], scoring="roc_auc", n_repeats=3,
                                 random_state=RANDOM_SEED, n_jobs=1)
    importance = pd.DataFrame({"feature": (*FEATURES, *CATEGORICAL), "importance": imp.importances_mean}) \
        .sort_values("importance", ascending=False).reset_index(drop=True)
    version = _store_version(wh, config, {"model": model, "bgnbd": bg, "vocabulary": vocabulary},
                             df, metrics, purchase_rows(wh, config))
    training = Training(
        version=version, config=config,
        cutoffs={role: sorted(str(c) for c in df.loc[df["cutoff_role"] == role, "cutoff_date"].unique())
                 for role in ("train", "validate")},
        rows={"train": len(train_df), "validate": len(valid)}, metrics=metrics,
        top_shares=top_share_table(yv, p_model), calibration=calibration, importance=importance,
        validation_scores=p_model, bgnbd=bg, purchases=purchase_rows(wh, config))
    training.seconds = time.perf_counter() - started
    for name in ("heuristic", "bgnbd"):
        if metrics["model"]["auc"] <= metrics[name]["auc"]:
            training.warnings.append(f"the model's validation AUC {metrics['model']['auc']:.3f} does not "
                                     f"beat the {name} baseline's {metrics[name]['auc']:.3f}")
    return training


# -- versions -------------------------------------------------------------------------------------
def save_version(wh, model: str, bundle: dict, config_json: str, window: dict, metrics: dict,
                 purchases: int, active: bool) -> int:
    """A new version of `model`: the fitted bundle under OA_HOME/models/<model>/ and its row in
    ml.model_versions (made the active one when `active`), in one transaction."""
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
    with wh.connect() as conn:
        path = wh.settings.home / wh.execute(conn, f"select artefact from {VERSIONS_TABLE} where "
                                                   "model = %s and version = %s",
                                             [MODEL, active["version"]])[0][0]
    bundle = pickle.loads(path.read_bytes())  # noqa: S301 - our own artefact, written by train()
    df = read_features(wh, ("score",))
    if df.empty:
        raise DataTooSmall("no predictable people at the as-of date: nobody bought within the "
                           "lookback window")
    p = bundle["model"].predict_proba(matrix(df, bundle["vocabulary"]))[:, 1]
    config = RepurchaseConfig.model_validate_json(active_config(wh, active["version"]))
    warnings = []
    now = purchase_rows(wh, config)
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
        wh.execute(conn, f"delete from {SCORES_TABLE}")
        wh.insert_arrow(conn, SCORES_TABLE, table)
    return Scoring(version=int(active["version"]), as_of=as_of, users=len(p), warnings=warnings, scores=p)


def active_config(wh, version: int) -> str:
    return wh.query(f"select config from {VERSIONS_TABLE} where model = %s and version = %s",
                    [MODEL, version])[0][0]
