"""`oa ml`: the machine-learning models from the command line.

    oa ml train repurchase [--no-activate]    # fit, validate against the baselines, report
    oa ml score repurchase                    # score everyone predictable with the active version
    oa ml models                              # versions, their metrics, which one is active
    oa ml activate repurchase VERSION
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.errors import UserError

console = Console()
ml_app = typer.Typer(no_args_is_help=True, help="Repurchase prediction (and, next, recommendation).")
MODELS = ("repurchase",)


def _model(name: str) -> None:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; one of {', '.join(MODELS)}")


def train_repurchase(activate: bool = True, out: Console | None = None) -> tuple[object, object, Path]:
    """Train, activate (unless told not to), score and write the report; what `make demo` runs."""
    from ml import repurchase as rp
    from ml.report import write_report
    from orchestration.warehouse import Warehouse

    out = out or console
    wh = Warehouse()
    with Progress(SpinnerColumn(), TextColumn("[bold]repurchase[/bold] {task.description}"),
                  TimeElapsedColumn(), console=out) as progress:
        task = progress.add_task("", total=None)
        training = rp.train(wh, progress=lambda text: progress.update(task, description=text))
        scoring = None
        if activate:
            progress.update(task, description="scoring")
            rp.activate(wh, training.version)
            scoring = rp.score(wh)
    path = write_report(training, wh.settings.home / "reports", scoring)
    return training, scoring, path


def print_training(training, scoring, path: Path, out: Console | None = None) -> None:
    out = out or console
    table = Table(title=f"repurchase v{training.version}: validation on "
                        f"{', '.join(training.cutoffs['validate'])} ({training.rows['validate']:,} people)")
    for col in ("", "AUC", "PR-AUC", "top 25% precision", "random group", "lift top 5%"):
        table.add_column(col, justify="left" if not col else "right")
    for name, m in training.metrics.items():
        table.add_row(name, f"{m['auc']:.3f}", f"{m['pr_auc']:.3f}", f"{m['precision_top25']:.1%}",
                      f"{m['random_precision_top25']:.1%}", f"{m['lift_top5']:.2f}")
    out.print(table)
    for w in training.warnings + (scoring.warnings if scoring else []):
        out.print(f"[yellow]warning[/yellow]: {w}", soft_wrap=True)
    if scoring:
        out.print(f"scored {scoring.users:,} people as of {scoring.as_of} into ml.repurchase_scores")
    out.print(f"repurchase report: {path}", soft_wrap=True)


@ml_app.command("train")
def train_cmd(model: Annotated[str, typer.Argument(help="repurchase")],
              activate: Annotated[bool, typer.Option(help="Make the new version active and score.")] = True,
              ) -> None:
    """Train a new version, validate it against the baselines and write its report."""
    _model(model)
    print_training(*train_repurchase(activate))


@ml_app.command("score")
def score_cmd(model: Annotated[str, typer.Argument(help="repurchase")]) -> None:
    """Score everyone predictable with the active version."""
    from ml import repurchase as rp
    from orchestration.warehouse import Warehouse

    _model(model)
    s = rp.score(Warehouse())
    for w in s.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}", soft_wrap=True)
    console.print(f"scored {s.users:,} people as of {s.as_of} with version {s.version}")


@ml_app.command("models")
def models_cmd() -> None:
    """Every trained version with its validation metrics; the active one is marked."""
    from ml import repurchase as rp
    from orchestration.warehouse import Warehouse

    table = Table(title="repurchase model versions")
    for col in ("version", "trained", "active", "AUC", "BG/NBD AUC", "heuristic AUC", "validated on"):
        table.add_column(col)
    for v in rp.versions(Warehouse()):
        m = json.loads(v["metrics"])
        table.add_row(str(v["version"]), f"{v['trained_at']:%Y-%m-%d %H:%M}", "yes" if v["active"] else "",
                      f"{m['model']['auc']:.3f}", f"{m['bgnbd']['auc']:.3f}", f"{m['heuristic']['auc']:.3f}",
                      " – ".join(json.loads(v["data_window"])["validate"]))
    console.print(table)


@ml_app.command("activate")
def activate_cmd(model: Annotated[str, typer.Argument(help="repurchase")],
                 version: Annotated[int, typer.Argument(help="The version to make active.")]) -> None:
    """Make a trained version the one scoring uses."""
    from ml import repurchase as rp
    from orchestration.warehouse import Warehouse

    _model(model)
    rp.activate(Warehouse(), version)
    console.print(f"repurchase version {version} is active; `oa ml score repurchase` to score with it")
