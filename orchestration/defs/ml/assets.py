"""The models in Dagster. `ml/repurchase_model` trains, validates against the baselines and
activates a repurchase version, and `ml/repurchase_scores` scores with the active one; both sit
downstream of the dbt feature model. `ml/recommend_model` tunes, chooses and fits the
recommender, and `ml/recommendations` runs the tasks of ml/recommend.yml, downstream of their
audiences. Training runs weekly (Monday mornings). Scores and recommendations are eager (an
automation condition): they follow the nightly refresh of their features and audiences, and a
newly trained model."""

import dagster as dg

from orchestration.metadata import png_markdown
from orchestration.resources import WarehouseResource

FEATURES = dg.AssetKey(["marts", "ml_repurchase_features"])


def _metrics_md(metrics: dict) -> str:
    lines = ["| | AUC | PR-AUC | top 25% precision | random group |", "|---|---|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['auc']:.3f} | {m['pr_auc']:.3f} | {m['precision_top25']:.1%} | "
                     f"{m['random_precision_top25']:.1%} |")
    return "\n".join(lines)


@dg.asset(key=["ml", "repurchase_model"], deps=[FEATURES], group_name="ml",
          description="A new repurchase model version: gradient boosting, logistic regression and "
                      "BG/NBD fitted on the older training cutoffs, the best on the latest one chosen and "
                      "fitted on all, validated on the later cutoff against every candidate and a "
                      "recency/frequency heuristic, made active when none beats it; with its HTML report.")
def repurchase_model(context: dg.AssetExecutionContext,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import repurchase as rp
    from ml.report import write_report

    wh = warehouse.get()
    training = rp.train(wh, progress=context.log.info)
    activated = not training.warnings  # a version that loses to a baseline does not go live
    if activated:
        rp.activate(wh, training.version)
    path = write_report(training, wh.settings.home / "reports")
    for w in training.warnings + training.cautions:
        context.log.warning(w)
    return dg.MaterializeResult(metadata=repurchase_model_metadata(training, activated, path))


def repurchase_model_metadata(training, activated: bool, path) -> dict[str, dg.MetadataValue]:
    """What a trained repurchase version shows in the UI, from a run or from `oa ml train`."""
    from ml.report import charts

    m = training.metrics["model"]
    figures = charts(training)
    return {
        "version": dg.MetadataValue.int(training.version),
        "activated": dg.MetadataValue.bool(activated),
        "chosen": dg.MetadataValue.text(f"{training.chosen} (on the {training.chosen_on})"),
        "auc": dg.MetadataValue.float(m["auc"]),
        "pr_auc": dg.MetadataValue.float(m["pr_auc"]),
        "bgnbd_auc": dg.MetadataValue.float(training.metrics["bgnbd"]["auc"]),
        "heuristic_auc": dg.MetadataValue.float(training.metrics["heuristic"]["auc"]),
        "rfm_logistic_auc": dg.MetadataValue.float(training.metrics["rfm_logistic"]["auc"]),
        "calibration_error": dg.MetadataValue.float(m["ece"]),
        "against_baselines": dg.MetadataValue.md(_metrics_md(training.metrics)),
        "training_rows": dg.MetadataValue.int(training.rows["train"]),
        "validation_people": dg.MetadataValue.int(training.rows["validate"]),
        "warnings": dg.MetadataValue.text("; ".join(training.warnings + training.cautions) or "none"),
        "report": dg.MetadataValue.path(str(path)),
        "top_groups_chart": png_markdown(figures["top_groups"], "Top groups vs random"),
        "calibration_chart": png_markdown(figures["calibration"], "Calibration"),
        "importance_chart": png_markdown(figures["importance"], "Permutation importance"),
    }


MODEL_OUTPUTS = [dg.AssetKey(["ml", "repurchase_scores"]), dg.AssetKey(["ml", "recommendations"])]
"""The ml assets with an automation condition (the automation sensor of definitions.py targets them)."""


@dg.asset(key=["ml", "repurchase_scores"], deps=[FEATURES, dg.AssetKey(["ml", "repurchase_model"])],
          group_name="ml", automation_condition=dg.AutomationCondition.eager(),
          description="ml.repurchase_scores: every predictable person's probability of buying again "
                      "within the horizon, with rank and decile, from the active model version.")
def repurchase_scores(context: dg.AssetExecutionContext,
                      warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import repurchase as rp

    scoring = rp.score(warehouse.get())
    for w in scoring.warnings:
        context.log.warning(w)
    return dg.MaterializeResult(metadata=repurchase_scores_metadata(scoring))


def repurchase_scores_metadata(scoring) -> dict[str, dg.MetadataValue]:
    from ml.report import score_histogram

    return {
        "dagster/row_count": dg.MetadataValue.int(scoring.users),
        "model_version": dg.MetadataValue.int(scoring.version),
        "as_of": dg.MetadataValue.text(str(scoring.as_of)),
        "warnings": dg.MetadataValue.text("; ".join(scoring.warnings) or "none"),
        "scores_chart": png_markdown(score_histogram(scoring.scores, "Scores"), "Scores"),
    }


PURCHASES = dg.AssetKey(["marts", "ml_purchases"])
REFERENCE = dg.AssetKey(["marts", "ml_reference_date"])  # T, the date the models are as of


@dg.asset(key=["ml", "recommend_model"], deps=[PURCHASES, REFERENCE, dg.AssetKey(["marts", "product_tags"])],
          group_name="ml",
          description="A new recommendation model version: popularity, item-item cosine, EASE and "
                      "recency-weighted EASE tuned on an earlier time split, chosen, judged against the "
                      "best sellers on the last one (bought products excluded as the tasks exclude them), "
                      "refitted on all purchases; with its report and the product association graph.")
def recommend_model(context: dg.AssetExecutionContext,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import recommend as rc
    from ml.report import write_recommend_report

    wh = warehouse.get()
    training = rc.train(wh, progress=context.log.info)
    path = write_recommend_report(training, wh.settings.home / "reports")
    for w in training.warnings:
        context.log.warning(w)
    return dg.MaterializeResult(metadata=recommend_model_metadata(training, path))


def recommend_model_metadata(training, path) -> dict[str, dg.MetadataValue]:
    from ml.report import recommend_charts

    test = training.test.set_index("model")
    name = training.chosen[0]
    figures = recommend_charts(training)
    return {
        "version": dg.MetadataValue.int(training.version),
        "chosen": dg.MetadataValue.text(f"{name} {training.chosen[1]}"),
        "hr@10": dg.MetadataValue.float(float(test.loc[name, "hr@10"])),
        "best_sellers_hr@10": dg.MetadataValue.float(float(test.loc["popularity", "hr@10"])),
        "ndcg@10": dg.MetadataValue.float(float(test.loc[name, "ndcg@10"])),
        "hr@10_bought_included": dg.MetadataValue.float(float(test.loc[name, "hr@10 incl"])),
        "report": dg.MetadataValue.path(str(path)),
        "metrics_chart": png_markdown(figures["metrics"], "Against the best sellers"),
        "association_chart": png_markdown(figures["association"], "Product associations"),
    }


def _task_audiences() -> list[dg.AssetKey]:
    try:
        from ml.recommend import load_config

        return sorted({dg.AssetKey(["audiences", t.audience]) for t in load_config().tasks},
                      key=lambda k: k.to_user_string())
    except Exception:  # noqa: BLE001 - a broken config fails the asset with its message instead
        return []


@dg.asset(key=["ml", "recommendations"], deps=[dg.AssetKey(["ml", "recommend_model"]), *_task_audiences()],
          group_name="ml", automation_condition=dg.AutomationCondition.eager(),
          description="ml.recommendations: each task's top products per audience member (or a 0-1 "
                      "preference for a one-product pool), from the active recommendation model.")
def recommendations(context: dg.AssetExecutionContext,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    from ml import recommend as rc

    results = rc.run_tasks(warehouse.get(), rc.load_config(), step=context.log.info)
    return dg.MaterializeResult(metadata=recommendations_metadata(results))


def recommendations_metadata(results) -> dict[str, dg.MetadataValue]:
    return {
        "dagster/row_count": dg.MetadataValue.int(sum(r.rows for r in results)),
        "tasks": dg.MetadataValue.md("\n".join(
            ["| task | people | products | top |", "|---|---|---|---|"]
            + [f"| {r.task} | {r.users:,} | {r.products:,} | "
               f"{'0-1 preference' if r.single_product else r.top} |" for r in results])),
    }


repurchase_training_job = dg.define_asset_job("repurchase_training",
                                              selection=[repurchase_model, repurchase_scores])
repurchase_scoring_job = dg.define_asset_job("repurchase_scoring", selection=[repurchase_scores])
weekly_training = dg.ScheduleDefinition(job=repurchase_training_job, cron_schedule="0 5 * * 1",
                                        default_status=dg.DefaultScheduleStatus.RUNNING)


recommend_training_job = dg.define_asset_job("recommend_training",
                                             selection=[recommend_model, recommendations])
recommendations_job = dg.define_asset_job("recommendations", selection=[recommendations])
weekly_recommend_training = dg.ScheduleDefinition(job=recommend_training_job, cron_schedule="30 5 * * 1",
                                                  default_status=dg.DefaultScheduleStatus.RUNNING)


def ml_definitions() -> dg.Definitions:
    """The model assets, their jobs and the weekly retraining. Scoring and recommending after the
    nightly refresh is the eager automation condition of their assets."""
    return dg.Definitions(assets=[repurchase_model, repurchase_scores, recommend_model, recommendations],
                          jobs=[repurchase_training_job, repurchase_scoring_job, recommend_training_job,
                                recommendations_job],
                          schedules=[weekly_training, weekly_recommend_training])
