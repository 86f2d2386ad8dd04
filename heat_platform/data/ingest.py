"""One partition's worth of data work, composed from the library: what each asset calls.

* :func:`ingest_problem_spec` — an experiment's problem.yaml: copied, parsed safely, checked to
  name its own folder, recorded;
* :func:`ingest_batch` — a landing file: its size checked first, then copied into the content
  store while hashing (bounded, and only if it still holds the bytes the sensor announced),
  read (to learn whether it is readable and what it holds), recorded as the batch's current
  version;
* :func:`validate_batch` — the current version: row rules, quarantine, the Great Expectations
  contract on the rows that passed, outcome recorded in the catalog;
* :func:`assemble_training_set` — an experiment's validated batches as one stored training set.

Every function returns a small result object the asset turns into Dagster metadata. Messages
name files as the user dropped them, never by their blob in the store. Text that came from a
user (cell values, column and file names) goes into Markdown only through
:func:`markdown_text`, so it shows as written and cannot fetch images, add links or break a
table in the Dagster UI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from heat_platform.data.catalog import BatchVersion, Catalog, SpecVersion, ValidatedBatches
from heat_platform.data.contract import BatchReadError, RawBatch, check_size, read_batch
from heat_platform.data.expectations import ExpectationsResult, run_expectations
from heat_platform.data.landing import LandingFile, LandingZone
from heat_platform.data.store import BlobRef, ContentStore
from heat_platform.data.training_set import (
    BatchInput,
    TrainingSet,
    build_training_set,
    load_training_set,
    save_training_set,
)
from heat_platform.data.validation import RowSplit, ValidationRules, split_rows
from heat_platform.heat.spec import MAX_BYTES, ProblemSpec, SpecError, load_spec

NUMERIC = ("x", "y", "t", "u", "sigma")


# -- problem specs --------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestedSpec:
    version: SpecVersion
    spec: ProblemSpec | None
    error: SpecError | None


def ingest_problem_spec(zone: LandingZone, store: ContentStore, catalog: Catalog,
                        experiment: str, *, run_id: str | None = None) -> IngestedSpec:
    """Store and parse an experiment's problem.yaml; an invalid one is recorded, not raised."""
    path = zone.problem_file(experiment)
    stat = path.stat()
    landing_file = LandingFile(experiment, "problem", path, stat.st_size, stat.st_mtime_ns)
    if stat.st_size > MAX_BYTES:
        error = SpecError("problem.yaml", f"file is {stat.st_size} bytes; the limit is {MAX_BYTES}")
        version = catalog.record_spec(experiment, sha256="", blob_path="", valid=False,
                                      message=str(error), run_id=run_id)
        return IngestedSpec(version, None, error)
    with zone.open(landing_file) as handle:
        blob = store.put_file(handle, ext="yaml", max_bytes=MAX_BYTES)
    try:
        spec = load_spec(blob.path)
        if spec.name != experiment:
            # The folder names the experiment (partitions, models, the API); a name that says
            # otherwise is a copied or misplaced file, and which one is meant cannot be guessed.
            raise SpecError("name", f"is {spec.name!r} but the file is in the folder "
                            f"{experiment!r}: the folder names the experiment; set "
                            f"'name: {experiment}' or move the file to <landing>/{spec.name}/")
    except SpecError as error:
        version = catalog.record_spec(experiment, sha256=blob.sha256, blob_path=blob.path,
                                      valid=False, message=str(error), run_id=run_id)
        return IngestedSpec(version, None, error)
    version = catalog.record_spec(experiment, sha256=blob.sha256, blob_path=blob.path,
                                  valid=True, spec_sha256=spec.sha256, run_id=run_id)
    return IngestedSpec(version, spec, None)


def current_spec(catalog: Catalog, experiment: str) -> tuple[SpecVersion, ProblemSpec]:
    """The spec validation and training use: the latest ingested, which must be valid."""
    version = catalog.latest_spec(experiment)
    if version is None:
        raise LookupError(f"no problem.yaml has been ingested for experiment {experiment!r} yet; "
                          "materialise problem_spec first")
    if not version.valid:
        raise LookupError(f"the latest problem.yaml of {experiment!r} was rejected: {version.message}")
    return version, load_spec(version.blob_path)


# -- batches --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestedBatch:
    version: BatchVersion
    landing_file: LandingFile
    raw: RawBatch | None
    read_error: BatchReadError | None

    def ranges(self) -> dict[str, tuple[float | None, float | None]]:
        """min and max of each numeric contract column present (CSV text is parsed)."""
        if self.raw is None:
            return {}
        frame = self.raw.frame
        present = [c for c in NUMERIC if c in frame.columns]
        stats = frame.select(
            [pl.col(c).cast(pl.Float64, strict=False).min().alias(f"{c}_min") for c in present]
            + [pl.col(c).cast(pl.Float64, strict=False).max().alias(f"{c}_max") for c in present]
        ).row(0, named=True)
        return {c: (stats[f"{c}_min"], stats[f"{c}_max"]) for c in present}


def ingest_batch(zone: LandingZone, store: ContentStore, catalog: Catalog, experiment: str,
                 batch: str, *, rules: ValidationRules, expected_sha256: str | None = None,
                 run_id: str | None = None) -> IngestedBatch:
    """Copy the landing file into the store (hashing what is copied) and make it current.

    Nothing is copied, and nothing recorded, when the file is above ``rules.max_file_bytes``
    (a :class:`BatchReadError` ``too_large``, raised before a byte is read), grows past it
    while copied, holds other bytes than ``expected_sha256`` (the version the sensor hashed and
    announced: the changed file is announced anew), or does not fit on the disk (the
    :class:`~heat_platform.data.store.StoreError` says which)."""
    landing_file = zone.locate(experiment, batch)
    check_size(landing_file.path.name, landing_file.size, rules.max_file_bytes)
    with zone.open(landing_file) as handle:
        blob = store.put_file(handle, ext=landing_file.ext, max_bytes=rules.max_file_bytes,
                              expected_sha256=expected_sha256)
    raw, read_error = _read(blob, rules, landing_file.path.name)
    version = catalog.record_ingestion(
        experiment, batch, sha256=blob.sha256, source_path=landing_file.path,
        blob_path=blob.path, size_bytes=blob.size, run_id=run_id,
        n_rows=raw.n_rows if raw is not None else None,
    )
    if read_error is not None:  # nothing to validate: the version is rejected here, with why
        version = catalog.record_validation(
            experiment, batch, sha256=blob.sha256, status="rejected", n_valid=0,
            message=f"the file cannot be read: {read_error}", run_id=run_id)
    return IngestedBatch(version, landing_file, raw, read_error)


@dataclass(frozen=True)
class ValidatedBatch:
    version: BatchVersion
    rules: ValidationRules
    split: RowSplit | None
    read_error: BatchReadError | None
    quarantine: BlobRef
    valid: BlobRef | None
    expectations: ExpectationsResult | None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def n_quarantined(self) -> int:
        return self.split.quarantined.height if self.split is not None else 0


def validate_batch(store: ContentStore, catalog: Catalog, experiment: str, batch: str,
                   spec: ProblemSpec, rules: ValidationRules, *, docs_dir: Path,
                   gx_max_rows: int | None = 1_000_000,
                   run_id: str | None = None) -> ValidatedBatch:
    """Validate the current version of a batch and record the outcome in the catalog."""
    version = catalog.current_version(experiment, batch)
    if version is None:
        raise LookupError(f"batch {batch!r} of {experiment!r} has not been ingested")
    raw, read_error = _read(BlobRef(version.sha256, Path(version.blob_path), version.size_bytes),
                            rules, Path(version.source_path).name)
    if raw is None:
        record = pl.DataFrame({"row": [None], "reason": [f"file unreadable: {read_error}"]},
                              schema={"row": pl.Int64, "reason": pl.String})
        quarantine = store.put_frame(record)
        version = catalog.record_validation(
            experiment, batch, sha256=version.sha256, status="rejected", n_valid=0,
            quarantine_path=quarantine.path, message=str(read_error), run_id=run_id)
        return ValidatedBatch(version, rules, None, read_error, quarantine, None, None,
                              [f"the file cannot be read: {read_error.message}"])

    split = split_rows(raw.frame, spec, rules)
    quarantine, valid = store.put_frame(split.quarantined), store.put_frame(split.valid)
    expectations = run_expectations(split.valid, spec, rules, docs_dir=docs_dir,
                                    max_rows=gx_max_rows,
                                    run_name=f"batch-{version.sha256[:16]}")
    problems = list(split.summary.get("problems", []))
    if not expectations.success:
        failed = ", ".join(r["expectation"] for r in expectations.failed)
        problems.append(f"Great Expectations contract failed on the validated rows: {failed}")
    version = catalog.record_validation(
        experiment, batch, sha256=version.sha256,
        status="rejected" if problems else "validated", n_rows=raw.n_rows,
        n_valid=split.valid.height, n_quarantined=split.quarantined.height,
        validated_path=valid.path, quarantine_path=quarantine.path,
        message="; ".join(problems) or None, run_id=run_id,
    )
    return ValidatedBatch(version, rules, split, None, quarantine, valid, expectations, problems)


def _read(blob: BlobRef, rules: ValidationRules,
          name: str) -> tuple[RawBatch | None, BatchReadError | None]:
    """The stored copy read under the name the user gave the file."""
    try:
        return read_batch(blob.path, name=name, **rules.read_limits()), None
    except BatchReadError as error:
        return None, error


# -- training sets --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTrainingSet:
    """Where a training set lives; what downstream assets receive."""

    experiment: str
    data_version: str
    directory: Path
    spec_sha256: str

    def load(self) -> TrainingSet:
        return load_training_set(self.directory)


def assemble_training_set(catalog: Catalog, root: Path, experiment: str, spec: ProblemSpec,
                          spec_sha256: str, *, validation_fraction: float, seed: int,
                          since_seq: int | None = None,
                          ) -> tuple[StoredTrainingSet, TrainingSet, ValidatedBatches]:
    """Union of the experiment's validated batches (ingested at or after ``since_seq`` when a
    drift episode started a new regime), split, scaled and stored by data version."""
    chosen = catalog.validated_batches(experiment)
    included = [v for v in chosen.included if since_seq is None or v.ingest_seq >= since_seq]
    if not included:
        reasons = "; ".join(e.reason for e in chosen.excluded) or "no batch has been validated"
        raise LookupError(f"experiment {experiment!r} has no validated batch to train on ({reasons})")
    training_set = build_training_set(
        [BatchInput(v.batch, v.sha256, pl.read_parquet(v.validated_path)) for v in included],
        spec, validation_fraction=validation_fraction, seed=seed, noise_sigma=spec.noise_sigma,
    )
    directory = root / experiment / training_set.data_version
    if not (directory / "manifest.json").exists():
        save_training_set(training_set, directory)
    stored = StoredTrainingSet(experiment, training_set.data_version, directory, spec_sha256)
    return stored, training_set, ValidatedBatches(included, chosen.excluded)


def as_markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A small Markdown table for Dagster metadata; every cell is :func:`markdown_text`."""
    if not rows:
        return "_none_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(markdown_text(r.get(c, "")) for c in columns) + " |"
                            for r in rows)


# What gives text a meaning inline (emphasis, code, links, images, HTML, entities, autolinks,
# table cells); block markers (#, -, 1.) only count at the start of a line, which this is not.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()<>!|~&:])")


def markdown_text(value: Any, max_chars: int = 200) -> str:
    """``value`` as literal inline text inside Markdown (a table cell, a list item's text):
    every character that gives inline Markdown (or the HTML it may contain) a meaning is
    backslash-escaped (``![](http://...)`` stays text, fetches
    nothing; ``|`` stays in its cell), line breaks become spaces, and text longer than
    ``max_chars`` is cut (with an ellipsis) so one cell cannot flood the UI."""
    text = " ".join(str(value).splitlines())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
