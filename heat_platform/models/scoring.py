"""Scores of a model on an experiment: what the training run reports and the gate compares.

Data: RMSE of u on the held-out validation sensors, and its ratio to the noise level (about 1
means the model explains the data down to the noise). Physics: the PDE residual on a fresh
collocation set, relative to the size of the terms it balances; the violation of the known
boundary diffusivity; whether a(x, y) is finite and inside the physical range. With a known true
diffusivity (synthetic experiments), relL2(a) too, for information: real experiments have none,
so no decision rests on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from heat_platform.heat.metrics import boundary_points, relative_l2, uniform_points
from heat_platform.heat.spec import ProblemSpec

Predict = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Residual = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

N_COLLOCATION = 4096
N_BOUNDARY = 400


@dataclass(frozen=True)
class Scores:
    validation_rmse: float
    noise_sigma: float
    rmse_to_noise: float
    # None for models that satisfy their own discretisation by construction (classical)
    residual_rms: float | None  # physical units of u_t
    residual_max: float | None
    residual_relative: float | None  # residual_rms / RMS of the source: comparable across experiments
    boundary_violation: float  # max |a - a_b| / |a_b| on the spatial boundary
    a_min: float
    a_max: float
    a_finite: bool
    rel_l2_a: float | None

    def as_dict(self) -> dict[str, float | bool | None]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numeric scores (for MLflow and Dagster metadata)."""
        return {k: float(v) for k, v in asdict(self).items()
                if v is not None and not isinstance(v, bool) and math.isfinite(float(v))}


@dataclass(frozen=True)
class Readings:
    """Temperatures at points, with the noise level of each reading."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, spec: ProblemSpec) -> Readings:
        """Rows of a training set or batch; a missing sigma falls back to the spec's noise."""
        fallback = spec.noise_sigma if spec.noise_sigma is not None else float(frame["u"].std() or 1.0)
        sigma = frame["sigma"].fill_null(fallback) if "sigma" in frame.columns else None
        return cls(*(frame[c].to_numpy().astype(float) for c in ("x", "y", "t", "u")),
                   sigma=(sigma.to_numpy().astype(float) if sigma is not None
                          else np.full(frame.height, fallback)))

    def observations(self):
        from heat_platform.heat.observations import Observations

        return Observations(x=self.x, y=self.y, t=self.t, u=self.u, sigma=self.sigma)


def score(predict: Predict, spec: ProblemSpec, validation: Readings, *,
          residual: Residual | None, seed: int = 0) -> Scores:
    """Score a model given as ``predict(x, y, t) -> (u, a)``; ``residual(x, y, t)`` gives its
    PDE residual (None when the model satisfies its own discretisation by construction)."""
    bounds = spec.domain.bounds()
    u, _ = predict(validation.x, validation.y, validation.t)
    rmse = float(np.sqrt(np.mean((u - validation.u) ** 2)))
    noise = float(np.sqrt(np.mean(validation.sigma**2)))

    points = uniform_points(bounds, N_COLLOCATION, seed=seed)
    _, a = predict(points["x"], points["y"], points["t"])
    if residual is not None:
        r = residual(points["x"], points["y"], points["t"])
        f = np.asarray(spec.source(x=points["x"], y=points["y"], t=points["t"]), dtype=float)
        scale = max(float(np.sqrt(np.mean(f**2))), 1e-12)
        residual_rms, residual_max = float(np.sqrt(np.mean(r**2))), float(np.max(np.abs(r)))
        residual_relative = residual_rms / scale
    else:
        residual_rms = residual_max = residual_relative = None

    boundary_violation = 0.0
    if spec.boundary_diffusivity is not None:
        edge = boundary_points(bounds, N_BOUNDARY, np.random.default_rng([seed, 7]))
        bx, by = edge[:, 0], edge[:, 1]
        _, a_edge = predict(bx, by, np.full_like(bx, bounds["t"][0]))
        a_b = np.asarray(spec.boundary_diffusivity(x=bx, y=by), dtype=float)
        boundary_violation = float(np.max(np.abs(a_edge - a_b) / np.abs(a_b)))

    rel_l2_a = None
    if spec.diffusivity_truth is not None:
        truth = np.asarray(spec.diffusivity_truth(x=points["x"], y=points["y"]), dtype=float)
        rel_l2_a = relative_l2(a, truth)
    return Scores(
        validation_rmse=rmse, noise_sigma=noise, rmse_to_noise=rmse / noise if noise else math.inf,
        residual_rms=residual_rms, residual_max=residual_max, residual_relative=residual_relative,
        boundary_violation=boundary_violation, a_min=float(np.nanmin(a)), a_max=float(np.nanmax(a)),
        a_finite=bool(np.isfinite(a).all()), rel_l2_a=rel_l2_a,
    )


def score_torchscript(path, spec: ProblemSpec, validation: Readings, *, seed: int = 0) -> Scores:
    """Score a serving artifact (TorchScript, physical units in and out)."""
    from heat_platform.pinn.export import load_exported
    from heat_platform.pinn.losses import pde_residual

    module = load_exported(path)
    return score(torchscript_predict(module), spec, validation,
                 residual=lambda x, y, t: pde_residual(module, spec, x, y, t), seed=seed)


def torchscript_predict(module) -> Predict:
    import torch

    def predict(x, y, t):
        x, y, t = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, t)))
        with torch.no_grad():
            out = module(torch.as_tensor(np.stack([x.ravel(), y.ravel(), t.ravel()], 1)))
        out = out.double().numpy()
        return out[:, 0].reshape(x.shape), out[:, 1].reshape(x.shape)

    return predict
