"""The repurchase model in Dagster: `ml/repurchase_model` (train, validate against the baselines,
activate; weekly) and `ml/repurchase_scores` (score with the active version; after every
nightly refresh), both downstream of the dbt feature model."""

import dagster as dg

from orchestration.analysis.metadata import png_markdown
from orchestration.resources import WarehouseResource

FEATURES = dg.AssetKey(["ml_repurchase_features"])


def _metrics_md(metrics: dict) -> str:
    lines = ["| | AUC | PR-AUC | top 25% precision | random group |", "|---|---|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['auc']:.3f} | {m['pr_auc']:.3f} | {m['precision_top25']:.1%} | "
                     f"{m['random_precision_top25']:.1%} |")
    return "\n".join(lines)


@dg.asset(key=["ml", "repurchase_model"], deps=[FEATURES], group_name="ml",
          description="A new repurchase model version: trained on the train cutoffs, validated on the "
                      "later one against a recency/frequency heuristic and BG/NBD, made active, with "
                      "its HTML report.")
def repurchase_model(context: dg.AssetExecutionContext,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import repurchase as rp
    from ml.report import charts, write_report

    wh = warehouse.get()
    training = rp.train(wh, progress=context.log.info)
    rp.activate(wh, training.version)
    path = write_report(training, wh.settings.home / "reports")
    for w in training.warnings:
        context.log.warning(w)
    m = training.metrics["model"]
    figures = charts(training)
    return dg.MaterializeResult(metadata={
        "version": dg.MetadataValue.int(training.version),
        "auc": dg.MetadataValue.float(m["auc"]),
        "pr_auc": dg.MetadataValue.float(m["pr_auc"]),
        "bgnbd_auc": dg.MetadataValue.float(training.metrics["bgnbd"]["auc"]),
        "heuristic_auc": dg.MetadataValue.float(training.metrics["heuristic"]["auc"]),
        "against_baselines": dg.MetadataValue.md(_metrics_md(training.metrics)),
        "training_rows": dg.MetadataValue.int(training.rows["train"]),
        "validation_people": dg.MetadataValue.int(training.rows["validate"]),
        "warnings": dg.MetadataValue.text("; ".join(training.warnings) or "none"),
        "report": dg.MetadataValue.path(str(path)),
        "top_groups_chart": png_markdown(figures["top_groups"], "Top groups vs random"),
        "calibration_chart": png_markdown(figures["calibration"], "Calibration"),
        "importance_chart": png_markdown(figures["importance"], "Permutation importance"),
    })


@dg.asset(key=["ml", "repurchase_scores"], deps=[FEATURES, dg.AssetKey(["ml", "repurchase_model"])],
          group_name="ml",
          description="ml.repurchase_scores: every predictable person's probability of buying again "
                      "within the horizon, with rank and decile, from the active model version.")
def repurchase_scores(context: dg.AssetExecutionContext,
                      warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import repurchase as rp
    from ml.report import score_histogram

    scoring = rp.score(warehouse.get())
    for w in scoring.warnings:
        context.log.warning(w)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(scoring.users),
        "model_version": dg.MetadataValue.int(scoring.version),
        "as_of": dg.MetadataValue.text(str(scoring.as_of)),
        "warnings": dg.MetadataValue.text("; ".join(scoring.warnings) or "none"),
        "scores_chart": png_markdown(score_histogram(scoring.scores, "Scores"), "Scores"),
    })


repurchase_training_job = dg.define_asset_job("repurchase_training",
                                              selection=[repurchase_model, repurchase_scores])
repurchase_scoring_job = dg.define_asset_job("repurchase_scoring", selection=[repurchase_scores])
weekly_training = dg.ScheduleDefinition(job=repurchase_training_job, cron_schedule="0 5 * * 1",
                                        default_status=dg.DefaultScheduleStatus.STOPPED)


def ml_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[repurchase_model, repurchase_scores],
                          jobs=[repurchase_training_job, repurchase_scoring_job],
                          schedules=[weekly_training])
