"""Stage 7, monitoring: drift of new data against the champion, and the retraining loop.

``drift_report`` (per batch) compares every validated batch with the champion's training set:
Evidently input drift of x, y, t, u and physics drift (how much worse the champion explains the
batch than its own held-out sensors). ``drift_retrain_sensor`` turns a drift episode into one
retraining run (training_set -> pinn_model -> gate -> champion -> deployed_bento) that trains on
the new regime only. ``serving_drift`` looks at a time window of the serving log, nightly.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from heat_platform.assets.configs import derived_config, library_values
from heat_platform.assets.partitions import (
    by_experiment,
    experiment_and_batch,
    experiment_batches,
    experiments,
    partitioned_check,
    split_batch_key,
)
from heat_platform.monitoring.drift import DriftThresholds
from heat_platform.names import DRIFT_BATCH, DRIFTED_FROM_CHAMPION, REGIME_START, TRIGGER
from heat_platform.resources.alerts import AlertWebhook
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings

SETTINGS = PlatformSettings.load()


class _DriftThresholds(dg.Config):
    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(**library_values(self, DriftThresholds))


DriftConfig = derived_config(
    "DriftConfig", DriftThresholds, base=_DriftThresholds,
    doc="Drift thresholds (heat_platform.monitoring.drift.DriftThresholds).")


def _report_metadata(context: dg.AssetExecutionContext, mlflow: MlflowTracking, experiment: str,
                     report) -> dict:
    """The drift report's figures, and its Evidently HTML linked over HTTP (an MLflow artifact)."""
    html = report.html
    return {
        "drift": report.drift,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in report.reasons)),
        "rows": report.rows,
        "drift share": report.drift_share,
        **{f"{report.thresholds.method}({c})": v for c, v in report.column_scores.items()},
        **({"misfit ratio": report.misfit_ratio, "RMSE / noise": report.rmse_to_noise,
            "champion PDE residual (relative)": report.residual_relative}
           if report.misfit_ratio is not None else {}),
        **(mlflow.report_links(context, experiment, "evidently_report", html.parent, [html], html)
           if html else {}),
    }


@dg.asset(
    partitions_def=experiment_batches,
    group_name="monitoring",
    kinds={"evidently"},
    owners=["team:heat-platform"],
    check_specs=[partitioned_check("no_drift", "drift_report",
                                   "The batch looks like the data the champion learned from.",
                                   blocking=False)],
    deps=[dg.AssetDep("validated_measurements"),
          dg.AssetDep("champion_model", partition_mapping=by_experiment)],
    # every newly validated batch; a new champion alone does not re-judge old batches
    automation_condition=dg.AutomationCondition.eager().ignore(
        dg.AssetSelection.assets("champion_model")),
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig,
                 storage: PlatformStorage, mlflow: MlflowTracking, alerts: AlertWebhook):
    """The batch against the champion's training set: input drift (Evidently) and physics drift."""
    import polars as pl

    from heat_platform.data.ingest import current_spec
    from heat_platform.data.training_set import load_training_set
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.monitoring.drift import batch_drift

    experiment, batch = experiment_and_batch(context)
    catalog = storage.catalog()
    version = catalog.current_version(experiment, batch)
    champion = ModelRegistry(mlflow.store(), catalog).current_champion(
        experiment, storage.paths.store / "models")
    lineage = {"batch": batch, "batch sha256": version.sha256, "ingest seq": version.ingest_seq}
    if champion is None or version.validated_path is None:
        why = "no champion to compare with yet" if champion is None else "the batch was rejected"
        return dg.MaterializeResult(
            metadata={"drift": False, "reasons": why, **lineage},
            check_results=[dg.AssetCheckResult(check_name="no_drift", passed=True,
                                               description=why)])

    _, spec = current_spec(catalog, experiment)
    reference = load_training_set(storage.paths.training_sets / experiment / champion.data_version)
    html = storage.report_dir("drift", experiment) / f"{batch}-{version.sha256[:12]}.html"
    report = batch_drift(reference.train, reference.validation,
                         pl.read_parquet(version.validated_path), spec, champion.artifact,
                         config.thresholds(), html=html,
                         reference_noise=(reference.noise or {}).get("sigma_rms"))
    if report.drift:
        context.log.warning(f"drift in {experiment}/{batch}: {'; '.join(report.reasons)}")
        alerts.send(severity="warning", title=f"drift in {experiment} batch {batch}",
                    experiment=experiment, details=report.as_dict(),
                    links={"report": html.as_uri()})
    return dg.MaterializeResult(
        metadata={**_report_metadata(context, mlflow, experiment, report), **lineage,
                  "champion version": champion.version,
                  "champion data_version": champion.data_version},
        check_results=[dg.AssetCheckResult(
            check_name="no_drift", passed=not report.drift,
            severity=dg.AssetCheckSeverity.WARN, description="; ".join(report.reasons))],
    )


# What a retraining run materialises. Its run requests name these assets too: Dagster's
# automation ignores an upstream update only when the run that made it also planned the
# downstream asset, and it reads that from the run's asset selection, which a job's run lacks
# unless the request gives it. Without it, the retrain's new PINN looked like news to the eager
# gate, which could then judge the same PINN a second time in a run of its own.
RETRAINED = ("training_set", "pinn_model", "classical_inversion", "gate_report",
             "champion_model", "deployed_bento")

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(*RETRAINED),
    partitions_def=experiments,
    description="Retrain an experiment on its newest regime and take it through the gate to "
    "deployment (drift_retrain_sensor launches it; tags say why).",
)


@dg.sensor(job=retrain_job, minimum_interval_seconds=SETTINGS.sensor_interval,
           default_status=dg.DefaultSensorStatus.RUNNING)
def drift_retrain_sensor(context: dg.SensorEvaluationContext):
    """One retraining run per drift episode: a drift report that flags drift against champion
    vN asks for run key ``drift:<experiment>:vN``, so later drifted batches (or a restarted
    sensor) do not ask again until a new champion exists. The retrain trains on the batches
    from the drifted one on (run tag names.REGIME_START)."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_report"), after_storage_id=after),
        limit=100, ascending=True).records
    requests = []
    for record in records:
        metadata = record.asset_materialization.metadata
        drift = metadata.get("drift")
        if not (drift and drift.value and "champion version" in metadata):
            continue
        experiment, batch = split_batch_key(record.partition_key)
        champion = metadata["champion version"].value
        requests.append(dg.RunRequest(
            run_key=f"drift:{experiment}:v{champion}",
            partition_key=experiment,
            asset_selection=[dg.AssetKey(name) for name in RETRAINED],
            tags={TRIGGER: "drift", DRIFT_BATCH: batch,
                  DRIFTED_FROM_CHAMPION: str(champion),
                  REGIME_START: str(metadata["ingest seq"].value)},
        ))
    cursor = str(records[-1].storage_id) if records else context.cursor
    return dg.SensorResult(run_requests=requests, cursor=cursor)


class ServingDriftConfig(DriftConfig):
    window_hours: float = Field(default=24.0, description="Requests served in this window.")


@dg.asset(
    partitions_def=experiments,
    group_name="monitoring",
    kinds={"evidently", "bentoml"},
    owners=["team:heat-platform"],
    deps=[dg.AssetDep("deployed_bento")],
)
def serving_drift(context: dg.AssetExecutionContext, config: ServingDriftConfig,
                  storage: PlatformStorage, mlflow: MlflowTracking, alerts: AlertWebhook):
    """The points users asked about (serving log, last window) against the training inputs."""
    import time

    from heat_platform.data.training_set import load_training_set
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.monitoring.drift import read_serving_log, request_drift

    experiment = context.partition_key
    champion = ModelRegistry(mlflow.store(), storage.catalog()).champion(experiment)
    if champion is None:
        return dg.MaterializeResult(metadata={"drift": False, "reasons": "no champion"})
    reference = load_training_set(storage.paths.training_sets / experiment / champion.data_version)
    requests = read_serving_log(storage.paths.serving / "log", experiment,
                                since_ts=time.time() - config.window_hours * 3600)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    html = storage.report_dir("serving-drift", experiment) / f"{stamp}.html"
    report = request_drift(reference.train, requests, config.thresholds(), html=html)
    outside = float(1 - requests["in_domain"].mean()) if requests.height else 0.0
    if report.drift:
        alerts.send(severity="warning", title=f"served requests of {experiment} drifted",
                    experiment=experiment, details=report.as_dict())
    return dg.MaterializeResult(metadata={
        **_report_metadata(context, mlflow, experiment, report), "window hours": config.window_hours,
        "out-of-domain share": outside, "champion version": champion.version})


serving_drift_job = dg.define_asset_job("serving_drift_check", selection=[serving_drift],
                                        partitions_def=experiments)


@dg.schedule(job=serving_drift_job, cron_schedule=SETTINGS.serving_drift_cron,
             default_status=dg.DefaultScheduleStatus.RUNNING)
def nightly_serving_drift(context: dg.ScheduleEvaluationContext):
    """Every night, the serving-log drift of every experiment that has a deployed bento."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"serving-drift:{name}:{day}", partition_key=name)
            for name in context.instance.get_dynamic_partitions("experiments")]
