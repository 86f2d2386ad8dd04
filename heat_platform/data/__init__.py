"""The data library behind the Dagster assets: landing zone -> store -> validation -> training set.

No Dagster import anywhere below this package; the assets and the sensor call these plain
functions and stay thin. The rule this package exists for: **nothing a user drops in the
landing zone is lost, silently changed or silently dropped** — every file is either taken or
reported (:class:`Skipped`), every taken version is kept (content store + catalog history),
every row is either valid or quarantined with a reason.

How the pipeline is meant to call it (one partition = one batch, key ``"<experiment>|<batch>"``)::

    zone, store, catalog = LandingZone(paths.landing), ContentStore(paths.store), Catalog(paths.catalog_url)

    # sensor tick: discover, wait for stable files, hash only what changed
    scan = zone.scan()                                   # scan.skipped -> context.log.warning
    seen = observe(cursor_state, scan.files, now_ns=time.time_ns(), min_age_s=10)
    prints = fingerprint(seen.state, seen.ready)         # prints.state -> the new cursor (JSON)
    for v in prints.new:                                 # run_key=f"{v.file.key}@{v.sha256}"
        ...

    # raw asset (partition experiment|batch)
    landing_file = zone.locate(experiment, batch)        # the key is never used to build a path
    with zone.open(landing_file) as handle:
        blob = store.put_file(handle, ext=landing_file.ext)
    catalog.record_ingestion(experiment, batch, sha256=blob.sha256, source_path=landing_file.path,
                             blob_path=blob.path, size_bytes=blob.size, run_id=context.run_id)

    # validated asset
    version = catalog.current_version(experiment, batch)
    rules = ValidationRules.from_spec(spec)
    try:
        raw = read_batch(version.blob_path, max_file_bytes=rules.max_file_bytes,
                         max_rows=rules.max_rows)
    except BatchReadError as error:                      # -> status "rejected", error.message
        ...
    split = split_rows(raw.frame, spec, rules)          # split.summary["passed"] is the gate
    valid_blob, quarantine_blob = store.put_frame(split.valid), store.put_frame(split.quarantined)
    catalog.record_validation(..., status="validated" if split.passed else "rejected", ...)
    checks = run_expectations(split.valid, spec, rules, docs_dir=...)   # blocking asset check

    # training set asset (per experiment)
    chosen = catalog.validated_batches(experiment)       # chosen.excluded -> metadata, not hidden
    ts = build_training_set([BatchInput(v.batch, v.sha256, pl.read_parquet(v.validated_path))
                             for v in chosen.included], spec)
    save_training_set(ts, directory)
"""

from heat_platform.data.catalog import BatchVersion, Catalog, Exclusion, ValidatedBatches
from heat_platform.data.contract import BatchReadError, RawBatch, read_batch
from heat_platform.data.expectations import ExpectationsResult, import_gx, run_expectations
from heat_platform.data.landing import (
    BatchScan,
    ExperimentScan,
    FileVersion,
    LandingError,
    LandingFile,
    LandingZone,
    Skipped,
    batch_key,
    fingerprint,
    observe,
    parse_batch_key,
    safe_join,
)
from heat_platform.data.store import BlobRef, ContentStore, SourceChangedError, StoreError
from heat_platform.data.training_set import (
    BatchInput,
    TrainingSet,
    build_training_set,
    load_training_set,
    save_training_set,
)
from heat_platform.data.validation import RowSplit, ValidationRules, domain_bounds, split_rows

__all__ = [
    "BatchInput",
    "BatchReadError",
    "BatchScan",
    "BatchVersion",
    "BlobRef",
    "Catalog",
    "ContentStore",
    "Exclusion",
    "ExpectationsResult",
    "ExperimentScan",
    "FileVersion",
    "LandingError",
    "LandingFile",
    "LandingZone",
    "RawBatch",
    "RowSplit",
    "Skipped",
    "SourceChangedError",
    "StoreError",
    "TrainingSet",
    "ValidatedBatches",
    "ValidationRules",
    "batch_key",
    "build_training_set",
    "domain_bounds",
    "fingerprint",
    "import_gx",
    "load_training_set",
    "observe",
    "parse_batch_key",
    "read_batch",
    "run_expectations",
    "safe_join",
    "save_training_set",
    "split_rows",
]
