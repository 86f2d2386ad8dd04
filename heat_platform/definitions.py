"""The heat-platform code location: one Definitions object for the whole asset graph, on this
machine or on Kubernetes (``HEAT_PLATFORM_DEPLOYMENT``; see heat_platform.resources)."""

import dagster as dg

from heat_platform.assets import (
    audit,
    features,
    gate,
    measurements,
    monitoring,
    serving,
    training,
    validation,
)
from heat_platform.assets.code_versions import with_code_versions
from heat_platform.paths import PlatformPaths
from heat_platform.resources import Deployment, build_executor, build_resources, deployment
from heat_platform.resources.mlflow import with_mlflow_hook
from heat_platform.settings import PlatformSettings

stages = [measurements, validation, features, training, gate, serving, monitoring, audit]


def build_definitions(paths: PlatformPaths | None = None,
                      mode: Deployment | None = None) -> dg.Definitions:
    """The code location on ``paths`` (default: the platform home of the environment), run
    ``mode`` (default: HEAT_PLATFORM_DEPLOYMENT)."""
    mode = mode or deployment()
    return dg.Definitions(
        # code versions from the source that computes each asset (assets.code_versions);
        # dagster-mlflow's hook on the assets that use MLflow (resources.mlflow)
        assets=with_mlflow_hook(with_code_versions(dg.load_assets_from_modules(stages))),
        asset_checks=dg.load_asset_checks_from_modules(stages),
        jobs=[measurements.ingest_spec_job, measurements.ingest_batch_job, gate.approve_job,
              gate.rollback_job, monitoring.retrain_job, monitoring.serving_drift_job,
              training.escalate_job],
        schedules=[monitoring.nightly_serving_drift],
        sensors=[
            measurements.landing_zone_sensor,
            monitoring.drift_retrain_sensor,
            training.escalation_sensor,
            dg.AutomationConditionSensorDefinition(
                "automation", target=dg.AssetSelection.all(),
                minimum_interval_seconds=PlatformSettings.load().automation_interval,
                default_status=dg.DefaultSensorStatus.RUNNING,
                # One run per partition group: a tick that asks for experiment-level and
                # batch-level assets at once would otherwise become a backfill, which Dagster
                # 1.13 cannot root across these partition mappings (seen: "Unable to determine
                # root partitions for backfill").
                emit_backfills=False,
            ),
        ],
        resources=build_resources(paths, mode),
        executor=build_executor(mode),
    )


defs = build_definitions()
