"""Assemble validated batches into a training set with a held-out-sensor validation split.

* Input: the validated rows of the current version of each batch
  (:meth:`Catalog.validated_batches` says which), as :class:`BatchInput`.
* Union, sorted by (batch, row) so the result does not depend on input order.
* Split by **held-out sensors**, not random rows: a PINN sees a sensor's whole time series or
  none of it, so validation measures generalisation to places it has not seen. A sensor is
  ``sensor_id`` when given, else the (x, y) location. A sensor is held out when a seeded hash
  of its identity falls below ``validation_fraction``: its assignment depends on nothing else,
  so it never changes when batches or sensors are added. Only if that rule holds out no
  sensor at all (few sensors) is the sensor with the smallest hash held out, so validation is
  never empty while there are two sensors (noted in ``warnings``).
* Scaling from the domain bounds and the *training* temperatures (``Scaling.fit``), stored
  with the data; scaled columns ``x_s, y_s, t_s, u_s`` are included for convenience.
* ``data_version``: sha256 over the sorted contributing (batch, version) pairs, the split
  parameters and the domain bounds (which fix the scaling), so the same inputs always give
  the same version and any change gives a new one.

On disk (:func:`save_training_set`): ``train.parquet``, ``validation.parquet``,
``scaling.json`` and ``manifest.json`` (written last; it records the sha256 of the other
files, which :func:`load_training_set` verifies).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from heat_platform.data.store import disk_full_as_error
from heat_platform.data.validation import VALID_SCHEMA, domain_bounds
from heat_platform.files import atomic_path, atomic_write, file_digest
from heat_platform.heat.noise import noise_level
from heat_platform.heat.scaling import Scaling

SPLIT_METHOD = "held-out-sensors/blake2b-v1"
MANIFEST = "manifest.json"
TABLES = ("train", "validation")
COLUMNS: dict[str, pl.DataType] = {
    "x": pl.Float64(),
    "y": pl.Float64(),
    "t": pl.Float64(),
    "u": pl.Float64(),
    "sigma": pl.Float64(),
    "sensor": pl.String(),
    "batch": pl.String(),
    "sensor_id": pl.String(),
    "row": pl.Int64(),
    "x_s": pl.Float64(),
    "y_s": pl.Float64(),
    "t_s": pl.Float64(),
    "u_s": pl.Float64(),
}


@dataclass(frozen=True)
class BatchInput:
    batch: str
    version: str  # sha256 of the batch file in the content store
    df: pl.DataFrame  # validated rows: x, y, t, u, sigma, sensor_id, row


@dataclass(frozen=True)
class TrainingSet:
    train: pl.DataFrame
    validation: pl.DataFrame
    scaling: Scaling
    data_version: str
    partitions: list[dict[str, Any]]
    params: dict[str, Any]
    held_out_sensors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    noise: dict[str, Any] | None = None  # NoiseLevel.as_dict(): the rule's decision

    def summary(self) -> dict[str, Any]:
        """JSON-able description (run metadata, manifest)."""
        return {
            "data_version": self.data_version,
            "n_train": self.train.height,
            "n_validation": self.validation.height,
            "n_sensors_train": self.train.get_column("sensor").n_unique(),
            "n_sensors_validation": len(self.held_out_sensors),
            "partitions": self.partitions,
            "params": self.params,
            "warnings": self.warnings,
            "noise": self.noise,
        }


def build_training_set(
    batches: list[BatchInput],
    bounds: Any,
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
    noise_sigma: float | None = None,
) -> TrainingSet:
    """The union of validated batches, every reading's noise level decided by the platform's
    one rule (:func:`heat_platform.heat.noise.noise_level`, ``noise_sigma`` being the
    problem.yaml's) and written into its ``sigma``, split by held-out sensors and scaled."""
    if not batches:
        raise ValueError("no validated batches to build a training set from")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    names = [b.batch for b in batches]
    if len(set(names)) != len(names):
        raise ValueError(
            f"a batch appears more than once: {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    bounds = domain_bounds(bounds)

    union = pl.concat(
        [
            _conform(b.df, b.batch).with_columns(pl.lit(b.batch, pl.String).alias("batch"))
            for b in batches
        ],
        how="vertical",
    ).sort("batch", "row")
    _check_inside(union, bounds)
    union = _with_sensor(union)
    noise = noise_level(
        *(union.get_column(c).to_numpy() for c in ("x", "y", "t", "u")),
        union.get_column("sigma").fill_null(float("nan")).to_numpy(),
        sensor=(union.get_column("batch") + "/" + union.get_column("sensor")).to_numpy(),
        spec_sigma=noise_sigma, bounds=bounds)
    union = union.with_columns(pl.Series("sigma", noise.sigma, dtype=pl.Float64))

    hashes = _sensor_hashes(union.get_column("sensor").unique().sort().to_list(), seed)
    held, warnings = _held_out(hashes, validation_fraction)
    if noise.warning:
        warnings.append(noise.warning)
    is_held = pl.col("sensor").is_in(pl.Series(sorted(held), dtype=pl.String).implode())
    train = union.filter(~is_held)
    validation = union.filter(is_held)

    scaling = Scaling.fit(bounds, train.get_column("u").to_numpy())
    train, validation = (
        _with_scaled(frame, scaling).select(list(COLUMNS)) for frame in (train, validation)
    )

    duplicates = union.select(pl.struct("x", "y", "t").is_duplicated().sum()).item()
    if duplicates:
        warnings.append(
            f"{duplicates} rows share (x, y, t) with a row of another batch (kept; each batch "
            "was checked on its own)"
        )
    params = {
        "validation_fraction": validation_fraction,
        "seed": seed,
        "split": SPLIT_METHOD,
        "bounds": {axis: list(bounds[axis]) for axis in ("x", "y", "t")},
        "noise_sigma_declared": noise_sigma,
    }
    partitions = _partitions(batches, train, validation)
    return TrainingSet(
        train=train,
        validation=validation,
        scaling=scaling,
        data_version=data_version([(b.batch, b.version) for b in batches], params),
        partitions=partitions,
        params=params,
        held_out_sensors=sorted(held),
        warnings=warnings,
        noise=noise.as_dict(),
    )


def data_version(pairs: list[tuple[str, str]], params: dict[str, Any]) -> str:
    """sha256 of the sorted (batch, version) pairs and the split parameters."""
    payload = json.dumps(
        {"batches": sorted([list(p) for p in pairs]), "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def save_training_set(ts: TrainingSet, directory: str | os.PathLike[str]) -> Path:
    """Write the training set to ``directory`` (created if needed); returns the manifest path.
    Each file is written to a temporary name and renamed; the manifest comes last, so a
    directory with a manifest is complete. A full disk is a
    :class:`~heat_platform.data.store.DiskFullError` and leaves no manifest."""
    directory = Path(directory)
    with disk_full_as_error(directory.parent, f"the training set {directory.name}"):
        return _save(ts, directory)


def _save(ts: TrainingSet, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, frame in (("train", ts.train), ("validation", ts.validation)):
        path = directory / f"{name}.parquet"
        with atomic_path(path) as partial:
            frame.write_parquet(partial)
        files[path.name] = file_digest(path)
    scaling_path = atomic_write(directory / "scaling.json", ts.scaling.to_json())
    files[scaling_path.name] = file_digest(scaling_path)
    manifest = {
        **ts.summary(),
        "held_out_sensors": ts.held_out_sensors,
        "scaling": ts.scaling.to_dict(),
        "files": files,
        "columns": {name: str(dtype) for name, dtype in COLUMNS.items()},
    }
    manifest_path = directory / MANIFEST
    return atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))


def load_training_set(directory: str | os.PathLike[str]) -> TrainingSet:
    """Read a saved training set, refusing files whose sha256 differs from the manifest."""
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    for name, expected in manifest["files"].items():
        actual = file_digest(directory / name)
        if actual != expected:
            raise ValueError(
                f"{directory / name} was modified after it was written "
                f"(sha256 {actual[:12]} != {expected[:12]} in the manifest)"
            )
    scaling = Scaling.from_json((directory / "scaling.json").read_text())
    return TrainingSet(
        train=pl.read_parquet(directory / "train.parquet"),
        validation=pl.read_parquet(directory / "validation.parquet"),
        scaling=scaling,
        data_version=manifest["data_version"],
        partitions=manifest["partitions"],
        params=manifest["params"],
        held_out_sensors=manifest["held_out_sensors"],
        warnings=manifest["warnings"],
        noise=manifest.get("noise"),
    )


# --- internals ---------------------------------------------------------------------------------


def _conform(df: pl.DataFrame, batch: str) -> pl.DataFrame:
    missing = [c for c in ("x", "y", "t", "u") if c not in df.columns]
    if missing:
        raise ValueError(f"batch {batch!r} has no column(s) {missing}: pass validated rows")
    if "row" not in df.columns:
        df = df.with_row_index("row", offset=1)
    return df.select(
        [
            pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in VALID_SCHEMA.items()
        ]
    )


def _check_inside(frame: pl.DataFrame, bounds: dict[str, tuple[float, float]]) -> None:
    """Validated rows were checked against the spec at validation time; if the spec's domain
    changed since, refuse rather than silently dropping or scaling out of [-1, 1]."""
    outside = frame.select(
        [(~pl.col(axis).is_between(lo, hi)).sum().alias(axis) for axis, (lo, hi) in bounds.items()]
    ).row(0, named=True)
    bad = {axis: n for axis, n in outside.items() if n}
    if bad:
        raise ValueError(
            f"rows outside the domain {bounds}: {bad}; the problem spec changed after "
            "validation, re-validate the batches"
        )


def _with_sensor(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``sensor``: ``id:<sensor_id>``, or ``xy:<x>,<y>`` written with Python's float repr
    (stable across library versions, unlike polars' float-to-text)."""
    key = [(pl.col("x") + 0.0).alias("_kx"), (pl.col("y") + 0.0).alias("_ky")]  # -0.0 -> 0.0
    places = frame.filter(pl.col("sensor_id").is_null()).select(key).unique()
    labels = [
        f"xy:{x!r},{y!r}"
        for x, y in zip(
            places.get_column("_kx").to_list(), places.get_column("_ky").to_list(), strict=True
        )
    ]
    lookup = places.with_columns(pl.Series("_place", labels, dtype=pl.String))
    return (
        frame.with_columns(key)
        .join(lookup, on=["_kx", "_ky"], how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("sensor_id").is_not_null())
            .then(pl.format("id:{}", pl.col("sensor_id")))
            .otherwise(pl.col("_place"))
            .alias("sensor")
        )
        .drop("_kx", "_ky", "_place")
    )


def _sensor_hashes(sensors: list[str], seed: int) -> dict[str, float]:
    """Each sensor's position in [0, 1): blake2b of (seed, identity), which depends on nothing
    but the sensor itself."""
    out = {}
    for sensor in sensors:
        digest = hashlib.blake2b(f"{seed}\x1f{sensor}".encode(), digest_size=8).digest()
        out[sensor] = int.from_bytes(digest, "big") / 2.0**64
    return out


def _held_out(hashes: dict[str, float], fraction: float) -> tuple[set[str], list[str]]:
    held = {s for s, h in hashes.items() if h < fraction}
    warnings: list[str] = []
    if fraction > 0 and not held and len(hashes) >= 2:
        fallback = min(hashes, key=hashes.__getitem__)
        held = {fallback}
        warnings.append(
            f"no sensor fell under validation_fraction={fraction} with {len(hashes)} sensors; "
            f"held out {fallback!r} (smallest hash) so validation is not empty; this choice may "
            "change when sensors are added"
        )
    if held and len(held) == len(hashes):
        keep = max(held, key=hashes.__getitem__)
        held.discard(keep)
        warnings.append(f"every sensor fell under the fraction; kept {keep!r} for training")
    if len(hashes) < 2:
        warnings.append("fewer than two sensors: the validation set is empty")
    return held, warnings


def _with_scaled(frame: pl.DataFrame, scaling: Scaling) -> pl.DataFrame:
    return frame.with_columns(
        [
            ((pl.col(axis) - getattr(scaling, axis).center) / getattr(scaling, axis).scale).alias(
                f"{axis}_s"
            )
            for axis in ("x", "y", "t", "u")
        ]
    )


def _partitions(
    batches: list[BatchInput], train: pl.DataFrame, validation: pl.DataFrame
) -> list[dict[str, Any]]:
    counts = {
        name: dict(frame.group_by("batch").len().iter_rows())
        for name, frame in (("train", train), ("validation", validation))
    }
    return [
        {
            "batch": b.batch,
            "version": b.version,
            "n_rows": b.df.height,
            "n_train": int(counts["train"].get(b.batch, 0)),
            "n_validation": int(counts["validation"].get(b.batch, 0)),
        }
        for b in sorted(batches, key=lambda b: b.batch)
    ]

