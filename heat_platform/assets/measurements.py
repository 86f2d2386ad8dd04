"""Stage 1, measurements: what labs drop in the landing zone, taken into the platform's storage.

``landing_zone_sensor`` discovers experiments and batch files; ``problem_spec`` and
``raw_measurements`` copy them into immutable, content-addressed storage. A file rewritten
under the same name becomes a new version of its partition (data version = content hash); the
old one stays in the store and in the catalog's history. A tick does bounded work (bytes hashed,
runs requested: HEAT_PLATFORM_SENSOR_*), and a file above the size limit is never read.
"""

from collections.abc import Iterator

import dagster as dg

from heat_platform.assets.partitions import (
    batch_partition,
    batches,
    experiment_and_batch,
    experiment_batches,
    experiments,
    partitioned_check,
)
from heat_platform.data.contract import BatchReadError
from heat_platform.data.discovery import TickLimits, plan_tick
from heat_platform.data.ingest import ingest_batch, ingest_problem_spec
from heat_platform.data.store import StoreError
from heat_platform.names import SHA256, TRIGGER
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings

READABLE = "readable"
SETTINGS = PlatformSettings.load()


@dg.asset(
    partitions_def=experiments,
    group_name="measurements",
    kinds={"yaml"},
    owners=["team:heat-platform"],
)
def problem_spec(context: dg.AssetExecutionContext, storage: PlatformStorage) -> dg.MaterializeResult:
    """The experiment's problem.yaml, copied into immutable storage and parsed safely.

    A spec that fails to parse (unknown keys, a formula outside the whitelist...) fails this
    partition with the key and the offending token; its batches wait until it is fixed.
    """
    experiment = context.partition_key
    ingested = ingest_problem_spec(storage.landing(), storage.store(), storage.catalog(),
                                   experiment, run_id=context.run_id)
    if ingested.spec is None:
        raise dg.Failure(
            description=f"problem.yaml of {experiment!r} rejected: {ingested.error}",
            metadata={"key": getattr(ingested.error, "key", ""),
                      "offending token": getattr(ingested.error, "token", None) or "",
                      "stored copy": dg.MetadataValue.path(ingested.version.blob_path)},
        )
    spec = ingested.spec
    formulas = {key: value for key, value in spec.to_dict().items()
                if key not in ("name", "description", "domain") and value is not None}
    return dg.MaterializeResult(
        metadata={
            "domain": dg.MetadataValue.json(spec.domain.bounds()),
            "formulas": dg.MetadataValue.md("\n".join(f"- **{k}**: `{v}`" for k, v in formulas.items())),
            "sha256": ingested.version.sha256,
            "stored copy": dg.MetadataValue.path(ingested.version.blob_path),
        },
        data_version=dg.DataVersion(ingested.version.sha256),
    )


@dg.asset(
    partitions_def=experiment_batches,
    group_name="measurements",
    kinds={"polars", "parquet"},
    owners=["team:heat-platform"],
    check_specs=[partitioned_check(READABLE, "raw_measurements",
                             "The file is a readable Parquet or CSV with the contract's columns.")],
)
def raw_measurements(context: dg.AssetExecutionContext,
                     storage: PlatformStorage) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """One landing file, copied byte for byte into the content store (sha256-addressed).

    The bytes are kept whatever they hold; whether they can be read is the blocking
    ``readable`` check, so an unreadable file is kept, reported, and stops nothing else. A file
    above the size limit, one that changed since the sensor announced it, or one the disk has
    no room for is not copied: the run fails saying which.
    """
    experiment, batch = experiment_and_batch(context)
    try:
        ingested = ingest_batch(storage.landing(), storage.store(), storage.catalog(),
                                experiment, batch, rules=storage.rules(),
                                expected_sha256=context.run_tags.get(SHA256),
                                run_id=context.run_id)
    except (BatchReadError, StoreError) as error:
        raise dg.Failure(description=f"{batch}: not ingested: {error}",
                         metadata={"error kind": getattr(error, "kind", type(error).__name__)},
                         allow_retries=False) from error
    version = ingested.version
    history = storage.catalog().history(experiment, batch)
    metadata = {
        "sha256": version.sha256,
        "size_bytes": version.size_bytes,
        "source path": dg.MetadataValue.path(str(ingested.landing_file.path)),
        "stored copy": dg.MetadataValue.path(version.blob_path),
        "ingested at": version.last_ingested_at.isoformat(),
        "versions of this batch": len(history),
    }
    if ingested.raw is not None:
        metadata["dagster/row_count"] = ingested.raw.n_rows
        metadata["dagster/column_schema"] = dg.TableSchema(columns=[
            dg.TableColumn(name, type=str(kind)) for name, kind in ingested.raw.source_types.items()])
        metadata["ranges"] = dg.MetadataValue.md(_ranges_table(ingested.ranges()))
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version.sha256))

    error = ingested.read_error
    yield dg.AssetCheckResult(
        check_name=READABLE,
        passed=error is None,
        description=None if error is None else f"{batch}: {error.message}",
        metadata={"error kind": error.kind if error else "",
                  "warnings": dg.MetadataValue.json(ingested.raw.warnings if ingested.raw else [])},
    )


ingest_spec_job = dg.define_asset_job(
    "ingest_problem_spec", selection=[problem_spec],
    description="Take an experiment's problem.yaml into the platform.",
)
ingest_batch_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets("raw_measurements", "validated_measurements",
                                       "quarantined_measurements"),
    description="Take one landing file into the platform and validate it.",
)


@dg.sensor(
    jobs=[ingest_spec_job, ingest_batch_job],
    minimum_interval_seconds=SETTINGS.sensor_interval,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_zone_sensor(context: dg.SensorEvaluationContext,
                        storage: PlatformStorage) -> dg.SensorResult | dg.SkipReason:
    """Discovers new or changed files in the landing zone and asks for their ingestion."""
    settings = PlatformSettings.load()
    limits = TickLimits(max_file_bytes=storage.max_file_bytes,
                        hash_bytes=settings.sensor_hash_bytes,
                        new_batches=settings.sensor_new_batches)
    plan = plan_tick(storage.landing(), storage.catalog(), context.cursor, limits=limits)
    for skipped in plan.skipped:
        context.log.warning(f"not taken: {skipped.path}: {skipped.reason}")
    for waiting in plan.waiting:
        context.log.info(f"waiting: {waiting}")
    if not plan.specs and not plan.batches:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new or changed files"),
                               cursor=plan.cursor)
    requests = [
        dg.RunRequest(run_key=a.run_key, job_name=ingest_spec_job.name, partition_key=a.experiment,
                      tags={TRIGGER: "landing_zone", SHA256: a.sha256})
        for a in plan.specs
    ] + [
        dg.RunRequest(run_key=a.run_key, job_name=ingest_batch_job.name,
                      partition_key=batch_partition(a.experiment, a.batch),
                      tags={TRIGGER: "landing_zone", SHA256: a.sha256})
        for a in plan.batches
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            experiments.build_add_request(plan.experiments),
            batches.build_add_request(sorted({a.batch for a in plan.batches})),
        ],
        cursor=plan.cursor,
    )


def _ranges_table(ranges: dict[str, tuple[float | None, float | None]]) -> str:
    rows = "\n".join(f"| {name} | {lo} | {hi} |" for name, (lo, hi) in ranges.items())
    return "| column | min | max |\n|---|---|---|\n" + rows
