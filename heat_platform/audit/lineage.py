"""From a served number back to the raw bytes: the lineage of a bento, a model version or a
request, read from what the platform recorded, and re-hashed on demand.

A reference is one of (:func:`resolve`):

* a bento tag, ``heat_service:<version>``: every model it serves;
* an MLflow model version, ``heat-model-<experiment>/<n>`` or ``<experiment>:<n>``;
* the ``model_version`` of a prediction (``<n>`` or ``v<n>``) with its experiment;
* the ``request_id`` of a prediction found in the serving log (only sampled requests are).

Each model's chain (:class:`ModelLineage`): model version, kind, aliases and status -> MLflow
run (params, metrics, artifacts, git commit, package versions, Dagster run) -> the gate's
decision and the model's audit-log entries -> the training set (data version, files with their
sha256, problem.yaml) -> its partitions -> the raw files (full sha256, source path, ingestion
time) -> what validation said (status, valid and quarantined rows). :func:`verify` re-hashes
the stored raw copies and the derived rows, the problem.yaml, the training set's files and the
model artifact (and the bento's copy) and names every file that is not what was recorded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from heat_platform.data.catalog import AuditEntry, Catalog
from heat_platform.data.training_set import MANIFEST, data_version
from heat_platform.files import file_digest
from heat_platform.models.registry import ModelRegistry
from heat_platform.models.tracking import FILE_TAG, KIND_TAG, MODEL_ARTIFACTS, SHA256_TAG
from heat_platform.names import (
    EXPERIMENT_NAME,
    JUDGED,
    PENDING,
    REGISTERED_MODEL_PREFIX,
    REJECTED,
    RUN_TAG_PREFIX,
    registered_model_name,
)
from heat_platform.paths import PlatformPaths
from heat_platform.serving.bento import BENTO_NAME, describe_bento


class LineageError(LookupError):
    """A reference that names nothing the platform holds; says what was looked for."""


@dataclass(frozen=True)
class Reference:
    """What a reference names: a bento, or model versions (experiment, version), and the
    request it came from."""

    kind: str  # "bento" | "model_version" | "request_id"
    text: str
    bento: str | None = None
    versions: tuple[tuple[str, str], ...] = ()
    request: dict[str, Any] | None = None


@dataclass
class RawFile:
    """One batch version of the training set: the landing file's bytes as stored, and what
    validation made of them."""

    batch: str
    sha256: str
    size_bytes: int | None
    source_path: str | None
    blob_path: str | None
    ingested_at: str | None
    last_ingested_at: str | None
    ingest_run_id: str | None
    status: str | None
    n_rows: int | None
    n_valid: int | None
    n_quarantined: int | None
    validated_path: str | None
    quarantine_path: str | None
    validated_at: str | None
    validation_run_id: str | None
    message: str | None
    n_train: int | None = None
    n_validation: int | None = None


@dataclass
class ModelLineage:
    experiment: str
    model: dict[str, Any]
    mlflow_run: dict[str, Any]
    gate: dict[str, Any]
    audit: list[dict[str, Any]]
    training_set: dict[str, Any]
    raw_files: list[RawFile]
    bento_model: dict[str, Any] | None = None


@dataclass
class Lineage:
    reference: Reference
    models: list[ModelLineage]
    bento: dict[str, Any] | None = None
    verification: list[str] | None = None  # mismatches (None: not verified)
    checked: list[str] = field(default_factory=list)  # files re-hashed

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- resolving a reference ---------------------------------------------------------------------

MODEL_VERSION = re.compile(rf"{re.escape(REGISTERED_MODEL_PREFIX)}(?P<experiment>.+)/v?(?P<n>\d+)")
EXPERIMENT_VERSION = re.compile(r"(?P<experiment>.+):v?(?P<n>\d+)")
SERVED_VERSION = re.compile(r"v?(?P<n>\d+)")


def resolve(text: str, paths: PlatformPaths, *, experiment: str | None = None) -> Reference:
    """What ``text`` names (see the module's docstring); :class:`LineageError` when nothing."""
    text = text.strip()
    if text.startswith(f"{BENTO_NAME}:"):
        return Reference("bento", text, bento=text)
    for pattern in (MODEL_VERSION, EXPERIMENT_VERSION):
        if (match := pattern.fullmatch(text)) and EXPERIMENT_NAME.fullmatch(match["experiment"]):
            return Reference("model_version", text,
                             versions=((match["experiment"], match["n"]),))
    if match := SERVED_VERSION.fullmatch(text):
        if experiment is None:
            raise LineageError(f"{text!r} looks like a served model_version: name its "
                               "experiment (--experiment)")
        return Reference("model_version", text, versions=((experiment, match["n"]),))
    request = find_request(paths.serving / "log", text)
    if request is None:
        raise LineageError(
            f"{text!r} is no bento tag ({BENTO_NAME}:<version>), model version "
            f"({REGISTERED_MODEL_PREFIX}<experiment>/<n> or <experiment>:<n>) or request id "
            f"in the serving log under {paths.serving / 'log'} (only a sample of requests is "
            "logged: HEAT_SERVING_LOG_SAMPLE)")
    return Reference("request_id", text, request=request,
                     versions=((request["experiment"], str(request["model_version"])),))


def find_request(directory: Path, request_id: str) -> dict[str, Any] | None:
    """The serving log's record of a request (newest files first), without its points."""
    if not re.fullmatch(r"[0-9A-Za-z_-]{8,128}", request_id):
        return None
    files = sorted(Path(directory).glob("*/requests-*.jsonl"), key=_mtime, reverse=True)
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if request_id not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                if entry.get("request_id") == request_id:
                    points = ("x", "y", "t", "value", "in_domain")
                    return {**{k: v for k, v in entry.items() if k not in points},
                            "log_file": str(path)}
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# -- building the chain ------------------------------------------------------------------------


def build_lineage(reference: Reference, paths: PlatformPaths, registry: ModelRegistry
                  ) -> Lineage:
    """The chain of every model ``reference`` names."""
    bento = None
    versions = list(reference.versions)
    if reference.bento is not None:
        bento = describe_bento(paths.bentoml_home, reference.bento)
        if bento is None:
            raise LineageError(f"no bento {reference.bento} in {paths.bentoml_home}")
        versions = [(experiment, str(model["metadata"]["mlflow_model_version"]))
                    for experiment, model in sorted(bento["models"].items())]
    models = []
    for experiment, version in versions:
        chain = model_lineage(experiment, version, paths, registry)
        if bento is not None:
            chain.bento_model = bento["models"][experiment]
        models.append(chain)
    return Lineage(reference, models, bento)


def model_lineage(experiment: str, version: str, paths: PlatformPaths,
                  registry: ModelRegistry) -> ModelLineage:
    client = registry.client
    name = registered_model_name(experiment)
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(name, version)
    except MlflowException as error:
        raise LineageError(f"the model registry has no {name} v{version}") from error
    tags = dict(found.tags)
    run = client.get_run(found.run_id)
    run_tags = dict(run.data.tags)
    model = {
        "name": name, "version": str(found.version), "kind": tags.get(KIND_TAG, "pinn"),
        "aliases": sorted(found.aliases), "status": _status(tags, found.aliases),
        "sha256": tags.get(SHA256_TAG), "file": tags.get(FILE_TAG),
        "artifact": f"{run.info.artifact_uri}/{MODEL_ARTIFACTS}/{tags.get(FILE_TAG, 'model.pt')}",
        "registered_at": _ms(found.creation_timestamp), "tags": tags,
        "url": registry.tracking.model_version_url(name, found.version),
    }
    mlflow_run = {
        "run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "url": registry.tracking.run_url(run.info.experiment_id, run.info.run_id),
        "started": _ms(run.info.start_time), "ended": _ms(run.info.end_time),
        "git_commit": run_tags.get("mlflow.source.git.commit"),
        "dagster_run_id": run_tags.get(f"{RUN_TAG_PREFIX}dagster_run_id"),
        "data_version": run_tags.get(f"{RUN_TAG_PREFIX}data_version"),
        "packages": {k.removeprefix(f"{RUN_TAG_PREFIX}version."): v
                     for k, v in sorted(run_tags.items())
                     if k.startswith(f"{RUN_TAG_PREFIX}version.")},
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(run.data.metrics.items())),
        "artifacts": _artifacts(client, run.info.run_id),
    }
    gate = {"judged_in_dagster_run": tags.get(JUDGED), "run_tag": run_tags.get(
        f"{RUN_TAG_PREFIX}gate"), "decision": _decision(client, run.info.run_id)}
    audit = [_entry(e) for e in registry.catalog.audit_chain(experiment)
             if e.model_name in (name, None) and str(found.version) in
             (e.to_version, e.from_version)]
    data = tags.get("data_version") or mlflow_run["data_version"] or ""
    training_set, raw_files = _training_set(paths, registry.catalog, experiment, data,
                                            run.data.params.get("data.spec_sha256"),
                                            run.info.start_time)
    return ModelLineage(experiment, model, mlflow_run, gate, audit, training_set, raw_files)


def _status(tags: dict[str, str], aliases: list[str]) -> str:
    if REJECTED in tags:
        return "rejected"
    if tags.get(PENDING) == "true":
        return "pending approval"
    return ", ".join(sorted(aliases)) or ("judged" if JUDGED in tags else "not judged yet")


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def _decision(client, run_id: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as directory:
        try:
            local = client.download_artifacts(run_id, "gate/decision.json", directory)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def _entry(entry: AuditEntry) -> dict[str, Any]:
    return {**dataclasses.asdict(entry), "at": entry.at.isoformat()}


def _training_set(paths: PlatformPaths, catalog: Catalog, experiment: str, version: str,
                  spec_sha256: str | None, run_started_ms: int | None,
                  ) -> tuple[dict[str, Any], list[RawFile]]:
    directory = paths.training_sets / experiment / version
    summary: dict[str, Any] = {"data_version": version, "directory": str(directory)}
    spec = catalog.spec_version(experiment, spec_sha256) if spec_sha256 else None
    inferred = spec is None and not spec_sha256 and run_started_ms is not None
    if inferred:  # a run that did not record it (the classical fit): the one current then
        import datetime as dt

        started = dt.datetime.fromtimestamp(run_started_ms / 1000, dt.UTC)
        spec = catalog.spec_current_at(experiment, started)
    if spec is not None or spec_sha256:
        summary["problem_spec"] = {
            "sha256": spec.sha256 if spec else spec_sha256,
            "blob_path": spec.blob_path if spec else None,
            "recorded_at": spec.recorded_at.isoformat() if spec else None,
            "how": "the problem.yaml current when the run started (the run did not record it)"
            if inferred else "recorded by the run"}
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        summary["missing"] = f"no readable manifest: {error}"
        return summary, []
    summary.update({key: manifest.get(key) for key in (
        "n_train", "n_validation", "n_sensors_train", "n_sensors_validation", "params",
        "noise", "warnings")})
    summary["files"] = manifest["files"]
    raw_files = []
    for partition in manifest["partitions"]:
        batch, sha256 = partition["batch"], partition["version"]
        stored = catalog.batch_version(experiment, batch, sha256)
        values = dataclasses.asdict(stored) if stored else {}
        raw_files.append(RawFile(
            batch=batch, sha256=sha256, size_bytes=values.get("size_bytes"),
            source_path=values.get("source_path"), blob_path=values.get("blob_path"),
            ingested_at=_iso(values.get("ingested_at")),
            last_ingested_at=_iso(values.get("last_ingested_at")),
            ingest_run_id=values.get("ingest_run_id"), status=values.get("status"),
            n_rows=values.get("n_rows"), n_valid=values.get("n_valid"),
            n_quarantined=values.get("n_quarantined"),
            validated_path=values.get("validated_path"),
            quarantine_path=values.get("quarantine_path"),
            validated_at=_iso(values.get("validated_at")),
            validation_run_id=values.get("validation_run_id"), message=values.get("message"),
            n_train=partition.get("n_train"), n_validation=partition.get("n_validation")))
    summary["quarantined_rows"] = sum(r.n_quarantined or 0 for r in raw_files)
    return summary, raw_files


def _ms(value: int | None) -> str | None:
    import datetime as dt

    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat() if value else None


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


# -- verifying ---------------------------------------------------------------------------------


def verify(lineage: Lineage, paths: PlatformPaths, registry: ModelRegistry) -> Lineage:
    """Re-hash every stored file of the chain; ``lineage.verification`` lists each one that is
    missing or not the bytes that were recorded (empty: all intact)."""
    mismatches: list[str] = []
    checked: list[str] = []

    def expect(what: str, path: str | Path | None, sha256: str | None) -> None:
        if path is None or sha256 is None:
            mismatches.append(f"{what}: no stored file or sha256 was recorded")
            return
        checked.append(str(path))
        try:
            actual = file_digest(path)
        except OSError as error:
            mismatches.append(f"{what}: {path} cannot be read ({error.strerror or error})")
            return
        if actual != sha256:
            mismatches.append(f"{what}: {path} has sha256 {actual}, recorded {sha256}")

    for chain in lineage.models:
        for raw in chain.raw_files:
            expect(f"raw copy of batch {raw.batch!r}", raw.blob_path, raw.sha256)
            for kind, stored in (("validated rows", raw.validated_path),
                                 ("quarantined rows", raw.quarantine_path)):
                if stored:  # derived blobs are named by their sha256 too
                    expect(f"{kind} of batch {raw.batch!r}", stored, Path(stored).stem)
        spec = chain.training_set.get("problem_spec")
        if spec:
            expect("problem.yaml", spec["blob_path"], spec["sha256"])
        directory = Path(chain.training_set["directory"])
        if "missing" in chain.training_set:
            mismatches.append(f"training set {directory}: {chain.training_set['missing']}")
        for name, sha256 in (chain.training_set.get("files") or {}).items():
            expect("training set file", directory / name, sha256)
        _check_data_version(chain, directory, mismatches)
        _check_model(chain, expect, registry)
        if chain.bento_model is not None:
            expect("the bento's copy of the model", chain.bento_model["file"],
                   chain.model["sha256"])
    lineage.verification, lineage.checked = mismatches, checked
    return lineage


def _check_data_version(chain: ModelLineage, directory: Path, mismatches: list[str]) -> None:
    """The manifest's partitions and parameters must still hash to the data version the
    directory and the model are named by."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return
    pairs = [(p["batch"], p["version"]) for p in manifest["partitions"]]
    recomputed = data_version(pairs, manifest["params"])
    if recomputed != chain.training_set["data_version"]:
        mismatches.append(f"training set manifest {directory / MANIFEST}: its partitions and "
                          f"parameters hash to {recomputed}, not to the data version "
                          f"{chain.training_set['data_version']}")


def _check_model(chain: ModelLineage, expect, registry: ModelRegistry) -> None:
    """The artifact in MLflow's artifact store, read where it lies when that is a local
    directory, else downloaded."""
    uri = chain.model["artifact"]
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        expect("model artifact", unquote(parsed.path), chain.model["sha256"])
        return
    mlflow = registry.tracking.mlflow()
    with tempfile.TemporaryDirectory() as directory:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=directory)
        except Exception:  # whatever the store raises: the file is not there to check
            local = str(Path(directory) / "missing")
        expect(f"model artifact {uri}", local, chain.model["sha256"])
