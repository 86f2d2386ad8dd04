"""The honest baseline, and a servable model: the inverse problem solved classically.

Finite-volume forward model, exact discrete adjoint, Tikhonov smoothing with the weight from the
discrepancy principle, L-BFGS-B with bounds (:mod:`heat_platform.heat.inversion`). The fit is
exported as a TorchScript model with the PINN's interface
(:mod:`heat_platform.models.classical_module`), tracked in its own MLflow run and registered as a
version of the experiment's model like a PINN, so the gate can promote it and the Bento serve it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heat_platform.data.ingest import StoredTrainingSet
from heat_platform.heat.spec import ProblemSpec
from heat_platform.models import figures, tracking
from heat_platform.models.candidates import ModelCandidate
from heat_platform.models.mlflow_store import MlflowStore
from heat_platform.models.scoring import (
    Readings,
    Scores,
    diffusivity_of,
    load_model,
    score_torchscript,
    torchscript_predict,
)
from heat_platform.names import registered_model_name


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
    """Invert the training set classically, export the fit as a servable TorchScript model,
    score it on the held-out sensors like any candidate and register it as a version of the
    experiment's model (tag ``kind=classical``)."""
    from threadpoolctl import threadpool_limits

    from heat_platform.heat.inversion import invert_spec
    from heat_platform.models.classical_module import export_classical

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
        artifact = export_classical(
            result, models_dir / stored.experiment / run.info.run_id / "model.pt",
            {"spec_name": spec.name, "domain": {k: list(v) for k, v in spec.domain.bounds().items()},
             "grid": [nx, ny, n_steps], "penalty": penalty, "weight": float(result.weight),
             "data_version": stored.data_version})
        scores = score_torchscript(artifact, spec, validation)
        mlflow.log_metrics({f"score.{k}": v for k, v in scores.metrics().items()}
                           | {"weight": result.weight, "wall_time_s": result.wall_time,
                              "chi2_per_observation": result.chi2_per_observation})
        predict = torchscript_predict(load_model(artifact)[0])
        maps = {"classical": diffusivity_of(predict)}
        if spec.diffusivity_truth is not None:
            maps["truth (synthetic)"] = lambda x, y: spec.diffusivity_truth(x=x, y=y)
        png = figures.png_bytes(figures.diffusivity_maps(maps, spec.domain.bounds(),
                                                         f"{stored.experiment}: classical a(x, y)"))
        tracking.log_bytes(mlflow, png, "figures/diffusivity.png")
        name = registered_model_name(stored.experiment)
        version = tracking.register_model(mlflow, artifact, name, kind="classical", tags={
            "data_version": stored.data_version, "experiment": stored.experiment,
            "dagster_run_id": dagster_run_id})
        experiment_id = run.info.experiment_id
    candidate = ModelCandidate(
        experiment=stored.experiment, kind="classical", model_name=name, version=version,
        run_id=run.info.run_id, mlflow_experiment_id=experiment_id,
        data_version=stored.data_version, artifact=artifact, metrics=scores.metrics(),
        dagster_run_id=dagster_run_id)
    return ClassicalOutcome(candidate, scores, png, result.weight, result.chi2_per_observation,
                            result.wall_time, tracking_store.run_url(experiment_id, run.info.run_id))
