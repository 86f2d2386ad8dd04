"""A PINN training run as the platform does it: tracked in MLflow, exported, registered.

One MLflow experiment per platform experiment, one run per training; params are the whole
config, metrics are streamed per step (each loss term, the PDE residual term, validation RMSE),
artifacts are the a(x, y) map, the loss curves, the residual map and the model, which becomes a
new version of the experiment's registered model with the ``challenger`` alias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heat_platform.data.ingest import StoredTrainingSet
from heat_platform.heat.spec import ProblemSpec
from heat_platform.models import figures, tracking
from heat_platform.models.candidates import ModelCandidate
from heat_platform.models.mlflow_store import MlflowStore
from heat_platform.models.scoring import Readings, Scores, load_model, score_torchscript
from heat_platform.names import CHALLENGER, registered_model_name


@dataclass(frozen=True)
class TrainingOutcome:
    candidate: ModelCandidate
    scores: Scores
    figures: dict[str, bytes]  # name -> PNG
    iterations: int
    wall_time_s: float
    resumed_from_step: int
    run_url: str
    spread: dict[str, float] | None = None  # ensemble_spread, for an ensemble
    stopped_by: str = ""  # why training ended: criteria, time budget, converged, iteration cap


def fit_pinn(tracking_store: MlflowStore, stored: StoredTrainingSet, spec: ProblemSpec, config,
             *, models_dir: Path, checkpoint_dir: Path, dagster_run_id: str, profile: str = "",
             progress: Callable[[int, dict[str, float]], None] | None = None) -> TrainingOutcome:
    """Train on ``stored`` (resuming from ``checkpoint_dir`` when a run was interrupted), log
    everything to MLflow, export and register the model."""
    from heat_platform.pinn.trainer import train_pinn

    training_set = stored.load()
    train = Readings.from_frame(training_set.train, spec)
    validation = Readings.from_frame(training_set.validation, spec)
    partitions = [p["batch"] for p in training_set.partitions]
    tags = tracking.run_tags(experiment=stored.experiment, kind="pinn",
                             data_version=stored.data_version, partitions=partitions,
                             dagster_run_id=dagster_run_id, device=config.device)
    with tracking_store.start_run(stored.experiment, f"pinn-{stored.data_version[:8]}", tags) as run:
        mlflow = tracking_store.mlflow()
        tracking.log_params(mlflow, {**dataclasses.asdict(config), "profile": profile or "custom"},
                            prefix="pinn.")
        tracking.log_params(mlflow, {"n_train": training_set.train.height,
                                     "n_validation": training_set.validation.height,
                                     "spec_sha256": stored.spec_sha256}, prefix="data.")

        def log(step: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=step)
            if progress is not None:
                progress(step, metrics)

        trained = train_pinn(spec, train.observations(), training_set.scaling, config, log=log,
                             checkpoint_dir=checkpoint_dir, validation=validation.observations())
        artifact = trained.export(models_dir / stored.experiment / run.info.run_id / "model.pt")

        from heat_platform.pinn.losses import pde_residual

        module, _ = load_model(artifact)
        scores = score_torchscript(artifact, spec, validation)
        mlflow.log_metrics({f"score.{k}": v for k, v in scores.metrics().items()})
        mlflow.log_metrics({"iterations": trained.iterations, "wall_time_s": trained.wall_time_s})
        mlflow.set_tag("heat_platform.stopped_by", trained.stopped_by)
        if trained.warm_start:
            mlflow.log_metrics({f"warm_start.{k}": v for k, v in trained.warm_start.items()})

        bounds = spec.domain.bounds()
        maps = {"PINN": trained.diffusivity}
        if spec.diffusivity_truth is not None:
            maps["truth (synthetic)"] = lambda x, y: spec.diffusivity_truth(x=x, y=y)
        pngs = {
            "diffusivity.png": figures.png_bytes(figures.diffusivity_maps(
                maps, bounds, f"{stored.experiment}: a(x, y)")),
            "loss_curves.png": figures.png_bytes(figures.loss_curves(trained.history)),
            "residual.png": figures.png_bytes(figures.residual_map(
                lambda x, y, t: pde_residual(module, spec, x, y, t), bounds)),
        }
        spread = ensemble_spread(trained, bounds)
        if spread is not None:
            mlflow.log_metrics({"ensemble.a_spread_rms": spread["rms"],
                                "ensemble.a_spread_max": spread["max"]})
            pngs["diffusivity_spread.png"] = figures.png_bytes(figures.diffusivity_maps(
                {"std of a across members": trained.diffusivity_spread},
                bounds, f"{stored.experiment}: spread of the {len(trained.members)} members' a",
                label="std of a"))
        for name, png in pngs.items():
            tracking.log_bytes(mlflow, png, f"figures/{name}")

        name = registered_model_name(stored.experiment)
        version = tracking.register_model(mlflow, artifact, name, kind="pinn", tags={
            "data_version": stored.data_version, "experiment": stored.experiment,
            "dagster_run_id": dagster_run_id})
        mlflow.MlflowClient().set_registered_model_alias(name, CHALLENGER, version)
        experiment_id = run.info.experiment_id

    candidate = ModelCandidate(
        experiment=stored.experiment, kind="pinn", model_name=name, version=version,
        run_id=run.info.run_id, mlflow_experiment_id=experiment_id,
        data_version=stored.data_version, artifact=artifact, metrics=scores.metrics(),
        dagster_run_id=dagster_run_id, profile=profile,
    )
    return TrainingOutcome(candidate, scores, pngs, trained.iterations, trained.wall_time_s,
                           trained.resumed_from_step,
                           tracking_store.run_url(experiment_id, run.info.run_id), spread,
                           trained.stopped_by)


def ensemble_spread(trained, bounds: dict[str, tuple[float, float]]) -> dict[str, float] | None:
    """RMS and maximum over the domain (a 101-point grid) of the standard deviation of the
    ensemble members' a; None for a single network."""
    X, Y = figures.grid(bounds)
    spread = trained.diffusivity_spread(X, Y)
    if spread is None:
        return None
    return {"rms": float(np.sqrt(np.mean(spread**2))), "max": float(spread.max())}
