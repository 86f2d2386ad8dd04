"""Drift of new measurements (or served requests) against the champion's training reference.

Two kinds, because input drift alone cannot see a changed material:

* **input drift** (Evidently 0.7): per-column drift of x, y, t, u between the champion's
  training set and the new data (PSI by default, threshold 0.2; any Evidently stattest), and
  the share of drifted columns;
* **physics / concept drift**: how much worse the champion explains the new readings than its
  own held-out sensors, ``misfit_ratio = (RMSE / noise on the new data) / (RMSE / noise on the
  champion's validation split)``: about 1 when the material is the one it learned, large when
  it changed; plus the champion's relative PDE residual at the new points, which depends on
  where the points are, not on the readings (it flags data where the champion's physics is
  unreliable, e.g. new sensor positions; it is not a detector of a changed material).

Drift is claimed only on at least ``min_rows`` rows. Nothing here imports Dagster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from heat_platform.heat.spec import ProblemSpec

# Evidently methods whose value is a distance (drift when above the threshold); the others
# are statistical tests whose value is a p-value (drift when below it).
DISTANCES = {"psi", "wasserstein", "jensenshannon", "kl_div", "hellinger", "ed"}


@pydantic_dataclass(frozen=True, config=ConfigDict(use_attribute_docstrings=True))
class DriftThresholds:
    """When a batch (or a window of served requests) counts as drifted; every field is also a
    field of the drift assets' Dagster config."""

    method: str = "psi"
    """Evidently stattest per column (psi, ks, wasserstein, ...)."""
    column_threshold: float = 0.2
    """Per-column threshold of the stattest."""
    drift_share: float = 0.5
    """Input drift when at least this share of the columns drifted."""
    misfit_ratio: float = 1.3
    """Physics drift when the champion fits the batch this many times worse than its held-out
    sensors (bench/drift.py, 20 seeds each: benign 0.92-0.97, shipped material 1.81-1.87,
    miscalibration 2.25-2.39)."""
    min_rows: int = 200
    """Fewer rows: no drift is claimed either way."""


@dataclass(frozen=True)
class DriftReport:
    rows: int
    reference_rows: int
    column_scores: dict[str, float]
    drifted_columns: list[str]
    drift_share: float
    input_drift: bool
    rmse_to_noise: float | None
    reference_rmse_to_noise: float | None
    misfit_ratio: float | None
    residual_relative: float | None
    physics_drift: bool
    drift: bool
    reasons: list[str]
    html: Path | None
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    def metrics(self) -> dict[str, float]:
        numbers = {"rows": self.rows, "drift_share": self.drift_share,
                   "rmse_to_noise": self.rmse_to_noise, "misfit_ratio": self.misfit_ratio,
                   "residual_relative": self.residual_relative, "drift": float(self.drift),
                   **{f"{self.thresholds.method}_{c}": v for c, v in self.column_scores.items()}}
        return {k: float(v) for k, v in numbers.items() if v is not None and math.isfinite(v)}

    def as_dict(self) -> dict:
        data = asdict(self)
        data["html"] = str(self.html) if self.html else None
        return data


def input_drift(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str],
                thresholds: DriftThresholds, html: Path | None = None
                ) -> tuple[dict[str, float], list[str], float]:
    """Evidently's data drift of ``columns``: (score per column, drifted columns, share)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=columns)

    def dataset(frame: pl.DataFrame):
        return Dataset.from_pandas(frame.select(columns).to_pandas(), data_definition=definition)

    report = Report([DataDriftPreset(columns=columns, method=thresholds.method,
                                     threshold=thresholds.column_threshold,
                                     drift_share=thresholds.drift_share)])
    snapshot = report.run(dataset(current), dataset(reference))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))
    scores: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            scores[config["column"]] = float(metric["value"])
    distance = thresholds.method in DISTANCES
    drifted = [c for c in columns if c in scores and (
        scores[c] >= thresholds.column_threshold if distance
        else scores[c] < thresholds.column_threshold)]
    return scores, drifted, len(drifted) / len(columns)


def rmse_to_noise(module, frame: pl.DataFrame, spec: ProblemSpec,
                  reference_noise: float | None = None) -> float:
    """RMSE of the champion's u on the readings, in units of their noise level (the platform's
    noise rule; ``reference_noise``: the champion's training set's, for readings without)."""
    from heat_platform.models.scoring import Readings, torchscript_predict

    readings = Readings.from_frame(frame, spec, reference_noise)
    u, _ = torchscript_predict(module)(readings.x, readings.y, readings.t)
    rmse = float(np.sqrt(np.mean((u - readings.u) ** 2)))
    return rmse / float(np.sqrt(np.mean(readings.sigma ** 2)))


def residual_relative(module, kind: str, frame: pl.DataFrame, spec: ProblemSpec,
                      max_points: int = 4096) -> float:
    """The champion's relative PDE residual (as the gate measures it) at (a sample of) the new
    points."""
    from heat_platform.models.scoring import model_residual, relative_residual

    sample = frame if frame.height <= max_points else frame.sample(max_points, seed=0)
    points = {c: sample[c].to_numpy().astype(float) for c in ("x", "y", "t")}
    r, u_t = model_residual(module, kind, spec)(points["x"], points["y"], points["t"])
    return relative_residual(r, u_t, spec, points)


def batch_drift(reference: pl.DataFrame, reference_validation: pl.DataFrame,
                current: pl.DataFrame, spec: ProblemSpec, champion: Path,
                thresholds: DriftThresholds, html: Path | None = None,
                reference_noise: float | None = None) -> DriftReport:
    """A validated batch against the champion's training set (x, y, t, u and physics);
    ``reference_noise``: the training set's noise level, for a batch that states none."""
    from heat_platform.models.scoring import load_model

    columns = ["x", "y", "t", "u"]
    if current.height < thresholds.min_rows:
        return DriftReport(current.height, reference.height, {}, [], 0.0, False, None, None,
                           None, None, False, False,
                           [f"{current.height} rows: fewer than {thresholds.min_rows}, no claim"],
                           None, thresholds)
    # the whole training set (both sides of the sensor split) is the input reference
    everything = pl.concat([reference.select(columns), reference_validation.select(columns)])
    scores, drifted, share = input_drift(everything, current, columns, thresholds, html)
    module, kind = load_model(champion)
    new = rmse_to_noise(module, current, spec, reference_noise)
    baseline = (rmse_to_noise(module, reference_validation, spec)
                if reference_validation.height else math.nan)
    comparable = math.isfinite(baseline) and baseline > 0
    ratio = new / baseline if comparable else None
    residual = residual_relative(module, kind, current, spec)
    input_flag = share >= thresholds.drift_share
    physics_flag = ratio is not None and ratio >= thresholds.misfit_ratio
    reasons = []
    if not comparable:
        reasons.append("the champion has no held-out readings to compare with: no physics claim")
    if input_flag:
        reasons.append(f"input drift: {', '.join(drifted)} ({thresholds.method} >= "
                       f"{thresholds.column_threshold:g})")
    if physics_flag:
        reasons.append(f"physics drift: the champion fits these readings {ratio:.1f}x worse "
                       f"than its held-out sensors (RMSE {new:.2f} vs {baseline:.2f} noise levels)")
    if not (input_flag or physics_flag):
        reasons.append("no drift")
    return DriftReport(current.height, reference.height, scores, drifted, share, input_flag,
                       new, baseline if comparable else None, ratio, residual, physics_flag,
                       input_flag or physics_flag,
                       reasons, html, thresholds)


def request_drift(reference: pl.DataFrame, requests: pl.DataFrame, thresholds: DriftThresholds,
                  html: Path | None = None) -> DriftReport:
    """Served requests (no measured u) against the training inputs: input drift of x, y, t."""
    columns = ["x", "y", "t"]
    # a client may ask at any finite point (1e308 included): far out stays far out, but within
    # 10 spans of the training range, so that the histograms' bin edges stay finite
    clipped = []
    for column in columns:
        lo, hi = reference[column].min(), reference[column].max()
        span = (hi - lo) or 1.0
        clipped.append(pl.col(column).clip(lo - 10 * span, hi + 10 * span))
    requests = requests.filter(pl.all_horizontal(pl.col(columns).is_finite())).with_columns(
        clipped)
    enough = requests.height >= thresholds.min_rows
    if not enough:
        return DriftReport(requests.height, reference.height, {}, [], 0.0, False, None, None,
                           None, None, False, False,
                           [f"{requests.height} points served: fewer than "
                            f"{thresholds.min_rows}, no claim"], None, thresholds)
    scores, drifted, share = input_drift(reference, requests, columns, thresholds, html)
    flag = share >= thresholds.drift_share
    reasons = [f"input drift: {', '.join(drifted)}"] if flag else ["no drift"]
    return DriftReport(requests.height, reference.height, scores, drifted, share, flag, None,
                       None, None, None, False, flag, reasons, html, thresholds)


def read_serving_log(directory: Path, experiment: str, since_ts: float | None = None,
                     max_points: int = 1_000_000) -> pl.DataFrame:
    """Points of the sampled requests of ``experiment`` to /predict-like endpoints (x, y, t),
    from the serving log (see bentos/heat_service/serving_log.py for its contract).

    A bounded window, whatever the log holds: only the day folders and files written since
    ``since_ts``, newest file first, line by line, until ``max_points`` points (the newest) are
    in hand; a line cut by a crash is skipped."""
    import datetime as dt
    import json

    since_day = (dt.datetime.fromtimestamp(since_ts, dt.UTC).strftime("%Y-%m-%d")
                 if since_ts is not None else "")
    files = []
    for day in Path(directory).glob("*"):
        if not day.is_dir() or day.name < since_day:
            continue  # a day's folder holds requests of that day (and its last second before)
        for path in day.glob("requests-*.jsonl"):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted by the log's retention meanwhile
            if since_ts is None or modified >= since_ts:
                files.append((modified, path))
    columns = ("x", "y", "t", "in_domain")
    chunks: list[dict[str, list]] = []  # newest file first
    total = 0
    for _, path in sorted(files, reverse=True):
        rows: dict[str, list] = {column: [] for column in columns}
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
                    if entry.get("experiment") != experiment \
                            or entry.get("endpoint") == "/diffusivity":
                        continue
                    if since_ts is not None and \
                            dt.datetime.fromisoformat(entry["ts"]).timestamp() < since_ts:
                        continue
                    for column in columns:
                        rows[column].extend(entry.get(column, []))
        except FileNotFoundError:
            continue
        chunks.append(rows)
        total += len(rows["x"])
        if total >= max_points:
            break
    rows = {column: [value for chunk in reversed(chunks) for value in chunk[column]]
            for column in columns}
    frame = pl.DataFrame(rows, schema={"x": pl.Float64, "y": pl.Float64, "t": pl.Float64,
                                       "in_domain": pl.Boolean})
    return frame.tail(max_points)
