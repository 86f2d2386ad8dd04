"""Stage 3, features: one training set per experiment from all of its validated batches.

Coordinates and temperature are scaled with a transform stored next to the data (and later
packaged with the model); training and validation are split by held-out sensors; the data
version hashes the contributing partition versions. New validated batches refresh it through
declarative automation.
"""

import dagster as dg
from pydantic import Field

from heat_platform.assets.partitions import by_experiment, experiments
from heat_platform.data.ingest import (
    StoredTrainingSet,
    as_markdown_table,
    assemble_training_set,
    current_spec,
)
from heat_platform.names import REGIME_START, TRIGGER
from heat_platform.resources.storage import PlatformStorage

# Refresh when a batch of the experiment was validated, once nothing of the experiment is still
# running. Missing batch partitions are normal (the batch dimension is shared by experiments),
# so unlike eager() this does not wait for them; a new problem.yaml alone has no rows to add.
refresh_on_new_batches = (
    dg.AutomationCondition.any_deps_updated()
    .ignore(dg.AssetSelection.assets("problem_spec"))
    .since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh on new validated batches")


class TrainingSetConfig(dg.Config):
    validation_fraction: float = Field(
        default=0.2, description="Share of sensors held out for validation (never random rows).")
    seed: int = Field(default=0, description="Seed of the held-out sensor choice.")


@dg.asset(
    partitions_def=experiments,
    deps=[dg.AssetDep("validated_measurements", partition_mapping=by_experiment), "problem_spec"],
    group_name="features",
    kinds={"polars", "parquet"},
    owners=["team:heat-platform"],
    automation_condition=refresh_on_new_batches,
)
def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig,
                 storage: PlatformStorage) -> dg.Output[StoredTrainingSet]:
    """The union of the experiment's validated batches, scaled and split by held-out sensors.

    Batches whose newest version was rejected are left out and listed. After a drift episode
    the retraining run starts a new regime: only batches from the drifted one on are used.
    """
    experiment = context.partition_key
    catalog = storage.catalog()
    spec_version, spec = current_spec(catalog, experiment)
    if REGIME_START in context.run_tags:  # a retraining run after drift: the material changed
        catalog.start_regime(experiment, int(context.run_tags[REGIME_START]),
                             reason=context.run_tags.get(TRIGGER),
                             run_id=context.run_id)
    since = catalog.regime_start(experiment)
    stored, built, chosen = assemble_training_set(
        catalog, storage.paths.training_sets, experiment, spec, spec_version.sha256,
        validation_fraction=config.validation_fraction, seed=config.seed, since_seq=since,
    )
    summary = built.summary()
    for warning in built.warnings:
        context.log.warning(warning)
    partitions = [{"batch": v.batch, "version": v.sha256[:12], "rows": v.n_valid}
                  for v in chosen.included]
    return dg.Output(
        stored,
        metadata={
            "data_version": stored.data_version,
            "partitions": dg.MetadataValue.md(as_markdown_table(partitions, ["batch", "version", "rows"])),
            "excluded": dg.MetadataValue.md(as_markdown_table(
                [{"batch": e.version.batch, "reason": e.reason} for e in chosen.excluded],
                ["batch", "reason"])),
            "regime starts at ingest": since or 0,
            "n_train": summary["n_train"],
            "n_validation": summary["n_validation"],
            "held-out sensors": summary["n_sensors_validation"],
            "scaling": dg.MetadataValue.json(built.scaling.to_dict()),
            "warnings": dg.MetadataValue.json(built.warnings),
            "noise level": dg.MetadataValue.json(built.noise),
            "stored at": dg.MetadataValue.path(str(stored.directory)),
        },
        data_version=dg.DataVersion(stored.data_version),
    )
