"""`oa ml`: the machine-learning models from the command line.

    oa ml train repurchase [--no-activate]    # fit, validate against the baselines, report
    oa ml score repurchase                    # score everyone predictable with the active version
    oa ml train recommend                     # tune, choose and fit the recommender, report
    oa ml recommend [TASK...]                 # run the tasks of ml/recommend.yml
    oa ml pools                               # the product pools and how many products each holds
    oa ml models                              # versions, their metrics, which one is active
    oa ml activate repurchase|recommend VERSION
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from openaudience.core.errors import UserError

console = Console()
ml_app = typer.Typer(no_args_is_help=True, help="Repurchase prediction and product recommendation.")
MODELS = ("repurchase", "recommend")


def _model(name: str) -> None:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; one of {', '.join(MODELS)}")


def train_repurchase(activate: bool = True, out: Console | None = None) -> tuple[object, object, Path]:
    """Train, activate (unless told not to, or unless it loses to a baseline), score and write the
    report; what `make demo` runs."""
    from ml import repurchase as rp
    from ml.report import write_report
    from openaudience.core.warehouse import Warehouse

    out = out or console
    wh = Warehouse()
    with Progress(SpinnerColumn(), TextColumn("[bold]repurchase[/bold] {task.description}"),
                  TimeElapsedColumn(), console=out) as progress:
        task = progress.add_task("", total=None)
        training = rp.train(wh, progress=lambda text: progress.update(task, description=text))
        scoring = None
        if activate and not training.warnings:  # only a version that beats its baselines goes live
            progress.update(task, description="scoring")
            rp.activate(wh, training.version)
            scoring = rp.score(wh)
        elif activate:
            training.warnings.append(f"version {training.version} is not made active; "
                                     f"`oa ml activate repurchase {training.version}` to use it anyway")
    path = write_report(training, wh.settings.home / "reports", scoring)
    return training, scoring, path


def print_training(training, scoring, path: Path, out: Console | None = None) -> None:
    out = out or console
    table = Table(title=f"repurchase v{training.version}: {training.chosen} chosen on the "
                        f"{training.chosen_on}; validation on {', '.join(training.cutoffs['validate'])} "
                        f"({training.rows['validate']:,} people)")
    for col in ("", "AUC", "PR-AUC", "top 25% precision", "random group", "lift top 5%"):
        table.add_column(col, justify="left" if not col else "right")
    for name, m in training.metrics.items():
        table.add_row(name, f"{m['auc']:.3f}", f"{m['pr_auc']:.3f}", f"{m['precision_top25']:.1%}",
                      f"{m['random_precision_top25']:.1%}", f"{m['lift_top5']:.2f}")
    out.print(table)
    out.print(f"learnt from {training.source}", soft_wrap=True)
    for w in training.warnings + training.cautions + (scoring.warnings if scoring else []):
        out.print(f"[yellow]warning[/yellow]: {w}", soft_wrap=True)
    if scoring:
        out.print(f"scored {scoring.users:,} people as of {scoring.as_of} into ml.repurchase_scores")
    out.print(f"repurchase report: {path}", soft_wrap=True)


def train_recommend(out: Console | None = None, tasks: list[str] | None = None, activate: bool = True):
    """Train the recommender, run the tasks (all, or those named) and write the report."""
    from ml import recommend as rc
    from ml.report import write_recommend_report
    from openaudience.core.warehouse import Warehouse

    out = out or console
    config = rc.load_config()
    known = [t.name for t in config.tasks]
    unknown = [t for t in tasks or [] if t not in known]
    if unknown:  # before the training, not after it
        raise UserError(f"unknown task(s) {', '.join(map(repr, unknown))}; the tasks of ml/recommend.yml are "
                        f"{', '.join(known) or 'none'}")
    wh = Warehouse()
    with Progress(SpinnerColumn(), TextColumn("[bold]recommend[/bold] {task.description}"),
                  TimeElapsedColumn(), console=out) as progress:
        task = progress.add_task("", total=None)
        training = rc.train(wh, config, progress=lambda text: progress.update(task, description=text),
                            activate=activate)
        results = rc.run_tasks(wh, config, tasks, lambda text: progress.update(task, description=text))
    return training, results, write_recommend_report(training, wh.settings.home / "reports", results)


def print_recommend(training, results, path: Path, out: Console | None = None) -> None:
    out = out or console
    table = Table(title=f"recommend v{training.version}: chosen {training.chosen[0]} "
                        f"{training.chosen[1]}; {int(training.test['people'].max()):,} people judged "
                        f"on their last purchase day after the cutoff; bought products left out: "
                        f"{training.exclude}")
    for col in ("model", "HR@3", "HR@10", "recall@10", "NDCG@10", "HR@10 incl", "NDCG@10 incl"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in training.test.to_dict(orient="records"):
        table.add_row(r["model"], *(f"{r[k]:.3f}" for k in ("hr@3", "hr@10", "recall@10", "ndcg@10",
                                                             "hr@10 incl", "ndcg@10 incl")))
    out.print(table)
    out.print(f"learnt from {training.source}", soft_wrap=True)
    for w in training.warnings:
        out.print(f"[yellow]warning[/yellow]: {w}", soft_wrap=True)
    for r in results:
        what = "a 0-1 preference for its one product" if r.single_product else f"top {r.top}"
        out.print(f"task {r.task}: {r.users:,} people x {r.products:,} products, {what} "
                  f"({r.rows:,} rows in ml.recommendations)")
    out.print(f"recommendation report: {path}", soft_wrap=True)


@ml_app.command("train")
def train_cmd(model: Annotated[str, typer.Argument(help="repurchase or recommend")],
              activate: Annotated[bool, typer.Option(help="Make the new version active and score.")] = True,
              task: Annotated[list[str] | None, typer.Option(
                  "--task", help="recommend: run only this task of ml/recommend.yml (repeatable); "
                                 "default: every task.")] = None,
              ) -> None:
    """Train a new version, validate it against the baselines and write its report."""
    from orchestration.observe import report_models

    _model(model)
    if task and model != "recommend":
        raise UserError("--task names recommendation tasks: it goes with `oa ml train recommend`")
    if model == "recommend":
        training, results, path = train_recommend(activate=activate, tasks=task)
        print_recommend(training, results, path)
        report_models(_note, recommend=training, recommend_path=path, tasks=results)
    else:
        training, scoring, path = train_repurchase(activate)
        print_training(training, scoring, path)
        report_models(_note, repurchase=training, activated=scoring is not None, report_path=path,
                      scoring=scoring)


def _note(text: str) -> None:
    console.print(f"[yellow]note[/yellow]: {escape(text)}", soft_wrap=True)


@ml_app.command("recommend")
def recommend_cmd(tasks: Annotated[list[str] | None, typer.Argument(help="Tasks; default: all.")] = None,
                  ) -> None:
    """Run recommendation tasks of ml/recommend.yml with the active model."""
    from ml import recommend as rc
    from openaudience.core.warehouse import Warehouse
    from orchestration.observe import report_models

    results = rc.run_tasks(Warehouse(), rc.load_config(), tasks)
    for r in results:
        what = "a 0-1 preference" if r.single_product else f"top {r.top}"
        console.print(f"task {r.task}: {r.users:,} people x {r.products:,} products, {what}")
    report_models(_note, tasks=results)


@ml_app.command("pools")
def pools_cmd() -> None:
    """The product pools of ml/pools/ and how many products each holds now (the estimate)."""
    from ml.pools import load_pools, pool_items
    from openaudience.core.warehouse import Warehouse

    wh = Warehouse(reader=True)  # reads only: beside a writer, it reads the snapshot
    table = Table(title="product pools")
    for col in ("pool", "products", "description"):
        table.add_column(col)
    for name, pool in load_pools().items():
        table.add_row(name, f"{len(pool_items(wh, pool)):,}", Text(pool.description))
    console.print(table)


@ml_app.command("score")
def score_cmd(model: Annotated[str, typer.Argument(help="repurchase")]) -> None:
    """Score everyone predictable with the active version."""
    from ml import repurchase as rp
    from openaudience.core.warehouse import Warehouse

    _model(model)
    s = rp.score(Warehouse())
    for w in s.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}", soft_wrap=True)
    console.print(f"scored {s.users:,} people as of {s.as_of} with version {s.version}")
    from orchestration.observe import report_models

    report_models(_note, scoring=s)


@ml_app.command("models")
def models_cmd() -> None:
    """Every trained version with its validation metrics; the active one is marked."""
    from ml import repurchase as rp
    from openaudience.core.warehouse import Warehouse

    wh = Warehouse(reader=True)  # reads only: beside a writer, it reads the snapshot
    rec = Table(title="recommend model versions")
    for col in ("version", "trained", "active", "chosen", "HR@10", "best sellers HR@10"):
        rec.add_column(col)
    for v in rp.versions(wh, "recommend"):
        m = json.loads(v["metrics"])
        test = {r["model"]: r for r in m["test"]}
        chosen = m["chosen"]["model"]
        rec.add_row(str(v["version"]), f"{v['trained_at']:%Y-%m-%d %H:%M}", "yes" if v["active"] else "",
                    f"{chosen} {m['chosen']['params']}", f"{test[chosen]['hr@10']:.3f}",
                    f"{test['popularity']['hr@10']:.3f}")
    console.print(rec)
    # one line per version: the figures and the validation window do not fit a narrow table
    console.print("[bold]repurchase model versions[/bold] (* active)")
    for v in rp.versions(wh):
        m = json.loads(v["metrics"])
        chosen = (m.get("selection") or {}).get("chosen", "gboost")
        baselines = ", ".join(f"{label} {m[key]['auc']:.3f}" for key, label in (
            ("bgnbd", "BG/NBD"), ("heuristic", "heuristic"), ("rfm_logistic", "RFM logistic")) if key in m)
        active = " *" if v["active"] else ""
        console.print(f"v{v['version']}{active} trained {v['trained_at']:%Y-%m-%d %H:%M}: "
                      f"{chosen}, validation AUC {m['model']['auc']:.3f} against {baselines}; "
                      f"{_validated_on(v)}", soft_wrap=True, markup=False)


def _validated_on(version: dict) -> str:
    """The validation cutoff(s) and the window their labels cover: one cutoff is a date, not a
    range of one day."""
    first, last = json.loads(version["data_window"])["validate"][:2]
    horizon = json.loads(version.get("config") or "{}").get("horizon_days")
    cutoffs = first if first == last else f"{first} – {last}"
    if not horizon:
        return f"cutoff {cutoffs}"
    end = dt.date.fromisoformat(str(last)[:10]) + dt.timedelta(days=int(horizon))
    return f"cutoff {cutoffs}, purchases to {end}"


@ml_app.command("activate")
def activate_cmd(model: Annotated[str, typer.Argument(help="repurchase")],
                 version: Annotated[int, typer.Argument(help="The version to make active.")]) -> None:
    """Make a trained version the one scoring uses."""
    from ml import repurchase as rp
    from openaudience.core.warehouse import Warehouse

    _model(model)
    rp.activate(Warehouse(), version, model)
    then = "oa ml score repurchase" if model == "repurchase" else "oa ml recommend"
    console.print(f"{model} version {version} is active; `{then}` to use it")
