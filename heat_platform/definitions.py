"""The heat-platform code location: one Definitions object for the whole asset graph."""

import os

import dagster as dg

from heat_platform.assets import features, measurements, validation
from heat_platform.resources import build_executor, build_resources

AUTOMATION_INTERVAL_S = int(os.environ.get("HEAT_PLATFORM_AUTOMATION_INTERVAL", "15"))

stages = [measurements, validation, features]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(stages),
    asset_checks=dg.load_asset_checks_from_modules(stages),
    jobs=[measurements.ingest_spec_job, measurements.ingest_batch_job],
    sensors=[
        measurements.landing_zone_sensor,
        dg.AutomationConditionSensorDefinition(
            "automation", target=dg.AssetSelection.all(),
            minimum_interval_seconds=AUTOMATION_INTERVAL_S,
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    resources=build_resources(),
    executor=build_executor(),
)
