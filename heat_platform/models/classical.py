"""The honest baseline: the same inverse problem solved classically, tracked like the PINN.

Finite-volume forward model, exact discrete adjoint, Tikhonov smoothing with the weight from the
discrepancy principle, L-BFGS-B with bounds (:mod:`heat_platform.heat.inversion`). The fitted
fields are stored as an ``.npz`` next to the PINN models and logged to their own MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heat_platform.data.ingest import StoredTrainingSet
from heat_platform.heat.spec import ProblemSpec
from heat_platform.models import figures, tracking
from heat_platform.models.candidates import ModelCandidate
from heat_platform.models.mlflow_store import MlflowStore
from heat_platform.models.scoring import Predict, Readings, Scores, score


@dataclass(frozen=True)
class ClassicalOutcome:
    candidate: ModelCandidate
    scores: Scores
    png: bytes
    weight: float
    chi2_per_observation: float
    wall_time_s: float
    run_url: str


def fit_classical(tracking_store: MlflowStore, stored: StoredTrainingSet, spec: ProblemSpec, *,
                  penalty: str, nx: int, ny: int, n_steps: int, models_dir: Path,
                  dagster_run_id: str, threads: int = 1) -> ClassicalOutcome:
    from threadpoolctl import threadpool_limits

    from heat_platform.heat.inversion import invert_spec

    training_set = stored.load()
    train = Readings.from_frame(training_set.train, spec)
    validation = Readings.from_frame(training_set.validation, spec)
    lo, hi = spec.diffusivity_range or (0.01, 100.0)
    tags = tracking.run_tags(experiment=stored.experiment, kind="classical",
                             data_version=stored.data_version,
                             partitions=[p["batch"] for p in training_set.partitions],
                             dagster_run_id=dagster_run_id)
    with tracking_store.start_run(stored.experiment, f"classical-{stored.data_version[:8]}",
                                  tags) as run:
        mlflow = tracking_store.mlflow()
        tracking.log_params(mlflow, {"penalty": penalty, "nx": nx, "ny": ny, "n_steps": n_steps,
                                     "bounds": [lo, hi], "weight": "discrepancy"}, "classical.")
        # Small sparse solves: BLAS threads only contend with each other on a shared machine.
        with threadpool_limits(threads):
            result = invert_spec(
                spec, train, nx=nx, ny=ny, n_steps=n_steps, penalty=penalty,
                callback=lambda i, m: mlflow.log_metrics(
                    {f"classical.{k}": float(v) for k, v in m.items()}, step=i),
            )
        artifact = models_dir / stored.experiment / run.info.run_id / "classical.npz"
        save_fields(result, artifact)
        predict = load_predict(artifact)
        scores = score(predict, spec, validation, residual=None)
        mlflow.log_metrics({f"score.{k}": v for k, v in scores.metrics().items()}
                           | {"weight": result.weight, "wall_time_s": result.wall_time,
                              "chi2_per_observation": result.chi2_per_observation})
        maps = {"classical": lambda x, y: predict(x, y, np.zeros_like(x))[1]}
        if spec.diffusivity_truth is not None:
            maps["truth (synthetic)"] = lambda x, y: spec.diffusivity_truth(x=x, y=y)
        png = figures.png_bytes(figures.diffusivity_maps(maps, spec.domain.bounds(),
                                                         f"{stored.experiment}: classical a(x, y)"))
        tracking.log_bytes(mlflow, png, "figures/diffusivity.png")
        mlflow.log_artifact(str(artifact), artifact_path="model")
        experiment_id = run.info.experiment_id
    candidate = ModelCandidate(
        experiment=stored.experiment, kind="classical", model_name="", version="",
        run_id=run.info.run_id, mlflow_experiment_id=experiment_id,
        data_version=stored.data_version, artifact=artifact, metrics=scores.metrics(),
        dagster_run_id=dagster_run_id)
    return ClassicalOutcome(candidate, scores, png, result.weight, result.chi2_per_observation,
                            result.wall_time, tracking_store.run_url(experiment_id, run.info.run_id))


def save_fields(result, path: Path) -> Path:
    grid = result.grid
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=np.array(grid.x), y=np.array(grid.y), nx=grid.nx, ny=grid.ny,
                        a_nodes=result.a_nodes, times=result.solution.times, u=result.solution.u)
    return path


def load_predict(path: Path) -> Predict:
    """``predict(x, y, t) -> (u, a)`` of a stored classical fit (bilinear a, trilinear u)."""
    from heat_platform.heat.solver import ForwardSolution, Grid, bilinear

    with np.load(path) as saved:
        grid = Grid(x=tuple(saved["x"]), y=tuple(saved["y"]), nx=int(saved["nx"]), ny=int(saved["ny"]))
        solution = ForwardSolution(grid, saved["times"], saved["u"])
        a_nodes = saved["a_nodes"]

    def predict(x, y, t):
        x, y, t = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, t)))
        return solution.at(x, y, t), bilinear(grid, a_nodes, x, y)

    return predict
