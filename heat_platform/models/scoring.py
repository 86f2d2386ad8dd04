"""Scores of a model on an experiment: what the training run reports and the gate compares.

Data: RMSE of u on the held-out validation sensors, and its ratio to the noise level (about 1
means the model explains the data down to the noise). Physics: the PDE residual of the model's
(u, a) on a fresh collocation set, relative to the size of the terms it balances,
sqrt(mean(f^2) + mean(u_t^2)) (so a free decay, f = 0, is measured too); the violation of the
known boundary diffusivity; whether a(x, y) is finite and inside the physical range. Given the
training readings too, a through the solver: the held-out RMSE / noise of the classical
solver's u for the model's a (:func:`.inversion.solve_with_diffusivity`), the same measure for
an a of any kind, where the model's own u and residual are not (a classical u satisfies its
discretisation by construction, a PINN's u only approximately). The
residual of a PINN comes from automatic differentiation; a classical fit's fields are piecewise
linear on its grid, so its residual is taken with finite differences at its own grid spacing
(the derivatives its discretisation stands for), away from the edges. With a known true
diffusivity (synthetic experiments), relL2(a) too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import polars as pl

from heat_platform.heat.metrics import boundary_points, relative_l2, uniform_points
from heat_platform.heat.spec import ProblemSpec

Predict = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# (x, y, t) -> (PDE residual r, time derivative u_t), physical units
Residual = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

N_COLLOCATION = 4096
N_BOUNDARY = 400
# The residual is measured this share of each side away from the domain's edges, where the
# finite-difference stencils of a classical fit stay inside its grid.
INNER_MARGIN = 0.05


@dataclass(frozen=True)
class Scores:
    validation_rmse: float
    noise_sigma: float
    rmse_to_noise: float
    residual_rms: float | None  # physical units of u_t (None: not computed)
    residual_max: float | None
    residual_relative: float | None  # residual_rms / sqrt(mean f^2 + mean u_t^2): comparable
    boundary_violation: float  # max |a - a_b| / |a_b| on the spatial boundary
    a_min: float
    a_max: float
    a_finite: bool
    rel_l2_a: float | None
    # mean squared error of u at each held-out sensor location (sorted by x, then y) and its
    # number of readings: what the gate pairs between two models scored on the same readings
    sensor_mse: tuple[float, ...] = ()
    sensor_readings: tuple[int, ...] = ()
    # held-out RMSE / noise of the classical solver's u with this model's a (None: not computed)
    solver_rmse_to_noise: float | None = None

    def as_dict(self) -> dict[str, float | bool | None]:
        """The scalar scores (the per-sensor errors stay out of reports and metadata)."""
        return {k: v for k, v in asdict(self).items() if k not in PER_SENSOR}

    def metrics(self) -> dict[str, float]:
        """The numeric scores (for MLflow and Dagster metadata)."""
        return {k: float(v) for k, v in self.as_dict().items()
                if v is not None and not isinstance(v, bool) and math.isfinite(float(v))}


PER_SENSOR = ("sensor_mse", "sensor_readings")


def errors_by_sensor(x: np.ndarray, y: np.ndarray,
                     error: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Mean squared ``error`` at each sensor location (x, y), sorted by x then y, and the
    number of readings there. A sensor is its location: readings at the same place share its
    systematic error, so the sensors, not the readings, are the independent units."""
    if len(x) == 0:
        return (), ()
    _, where = np.unique(np.stack([x, y], axis=1), axis=0, return_inverse=True)
    where = where.ravel()
    counts = np.bincount(where)
    mse = np.bincount(where, weights=error**2) / counts
    return tuple(float(v) for v in mse), tuple(int(n) for n in counts)


@dataclass(frozen=True)
class Readings:
    """Temperatures at points, with the noise level of each reading."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, spec: ProblemSpec,
                   reference_noise: float | None = None) -> Readings:
        """Rows of a training set (every sigma decided when it was built) or of a batch, whose
        missing sigma the platform's noise rule decides: the spec's noise_sigma, else
        ``reference_noise`` (the training set's recorded estimate, for batches judged against
        it), else an estimate from the rows themselves."""
        from heat_platform.heat.noise import noise_level

        columns = [frame[c].to_numpy().astype(float) for c in ("x", "y", "t", "u")]
        sigma = (frame["sigma"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
                 if "sigma" in frame.columns else None)
        sensor = (frame["sensor_id"].cast(pl.String).fill_null("").to_numpy()
                  if "sensor_id" in frame.columns else None)
        declared = spec.noise_sigma if spec.noise_sigma is not None else reference_noise
        noise = noise_level(*columns, sigma, sensor=sensor, spec_sigma=declared,
                            bounds=spec.domain.bounds())
        return cls(*columns, sigma=noise.sigma)

    def observations(self):
        from heat_platform.heat.observations import Observations

        return Observations(x=self.x, y=self.y, t=self.t, u=self.u, sigma=self.sigma)


def score(predict: Predict, spec: ProblemSpec, validation: Readings, *,
          residual: Residual | None, seed: int = 0,
          boundary: np.ndarray | None = None) -> Scores:
    """Score a model given as ``predict(x, y, t) -> (u, a)``; ``residual(x, y, t)`` gives its
    PDE residual (None when the model satisfies its own discretisation by construction);
    ``boundary``, (n, 2) points where its a must equal the boundary diffusivity (default:
    random points on the spatial boundary)."""
    bounds = spec.domain.bounds()
    u, _ = predict(validation.x, validation.y, validation.t)
    error = u - validation.u
    rmse = float(np.sqrt(np.mean(error**2)))
    sensor_mse, sensor_readings = errors_by_sensor(validation.x, validation.y, error)
    noise = float(np.sqrt(np.mean(validation.sigma**2)))

    points = uniform_points(bounds, N_COLLOCATION, seed=seed)
    _, a = predict(points["x"], points["y"], points["t"])
    if residual is not None:
        inner = uniform_points(_inside(bounds, INNER_MARGIN), N_COLLOCATION, seed=seed)
        r, u_t = residual(inner["x"], inner["y"], inner["t"])
        residual_rms, residual_max = float(np.sqrt(np.mean(r**2))), float(np.max(np.abs(r)))
        residual_relative = relative_residual(r, u_t, spec, inner)
    else:
        residual_rms = residual_max = residual_relative = None

    boundary_violation = 0.0
    if spec.boundary_diffusivity is not None:
        edge = (boundary if boundary is not None
                else boundary_points(bounds, N_BOUNDARY, np.random.default_rng([seed, 7])))
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
        sensor_mse=sensor_mse, sensor_readings=sensor_readings,
    )


def relative_residual(r: np.ndarray, u_t: np.ndarray, spec: ProblemSpec,
                      points: dict[str, np.ndarray]) -> float:
    """RMS residual over the RMS size of the terms it balances, sqrt(mean f^2 + mean u_t^2)."""
    f = np.broadcast_to(np.asarray(spec.source(x=points["x"], y=points["y"], t=points["t"]),
                                   dtype=float), r.shape)
    scale = float(np.sqrt(np.mean(f**2) + np.mean(u_t**2)))
    return float(np.sqrt(np.mean(r**2))) / max(scale, 1e-12)


def load_model(path):
    """A serving artifact (TorchScript, any kind) and its kind: ``pinn`` or ``classical``."""
    import json

    import torch

    files = {"metadata.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files).eval()
    return module, json.loads(files["metadata.json"] or "{}").get("kind", "pinn")


def model_residual(module, kind: str, spec: ProblemSpec) -> Residual:
    """The (r, u_t) of a serving artifact: autograd for a PINN, finite differences at its grid
    spacing for a classical fit (see the module docstring)."""
    if kind == "classical":
        return classical_residual(module, spec)
    from heat_platform.pinn.losses import pde_terms

    return lambda x, y, t: pde_terms(module, spec, x, y, t)


def classical_residual(module, spec: ProblemSpec) -> Residual:
    """(r, u_t) of a classical fit's interpolated fields by centred finite differences with its
    grid's steps: r = u_t - [a_e (u_E - u) - a_w (u - u_W)] / hx^2 - [...] / hy^2 - f."""
    predict = torchscript_predict(module)
    nt, ny, nx = (int(n) for n in module.u_nodes.shape)
    (x0, x1), (y0, y1), (t0, t1) = module.domain_bounds.tolist()
    hx, hy, ht = (x1 - x0) / (nx - 1), (y1 - y0) / (ny - 1), (t1 - t0) / (nt - 1)

    def terms(x, y, t):
        def u(dx=0.0, dy=0.0, dt=0.0):
            return predict(x + dx, y + dy, t + dt)[0]

        def a(dx=0.0, dy=0.0):
            return predict(x + dx, y + dy, t)[1]

        centre = u()
        u_t = (u(dt=ht / 2) - u(dt=-ht / 2)) / ht
        div = ((a(dx=hx / 2) * (u(dx=hx) - centre) - a(dx=-hx / 2) * (centre - u(dx=-hx))) / hx**2
               + (a(dy=hy / 2) * (u(dy=hy) - centre) - a(dy=-hy / 2) * (centre - u(dy=-hy)))
               / hy**2)
        f = np.asarray(spec.source(x=x, y=y, t=t), dtype=float)
        return u_t - div - f, u_t

    return terms


def score_torchscript(path, spec: ProblemSpec, validation: Readings, *, seed: int = 0,
                      train: Readings | None = None) -> Scores:
    """Score a serving artifact (TorchScript of any kind, physical units in and out); with the
    ``train`` readings, also its a through the solver (:func:`solver_fit`)."""
    module, kind = load_model(path)
    predict = torchscript_predict(module)
    scores = score(predict, spec, validation, residual=model_residual(module, kind, spec),
                   seed=seed, boundary=grid_boundary(module) if kind == "classical" else None)
    if train is None:
        return scores
    return replace(scores, solver_rmse_to_noise=solver_fit(
        diffusivity_of(predict), spec, train, validation))


def diffusivity_of(predict: Predict) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A model's a(x, y) from its ``predict(x, y, t)`` (a does not depend on t)."""
    return lambda x, y: predict(x, y, np.zeros_like(x))[1]


def solver_fit(diffusivity, spec: ProblemSpec, train: Readings, validation: Readings) -> float:
    """Held-out RMSE / noise of the classical solver's u for the diffusivity a(x, y): the
    initial and boundary temperatures the spec does not state fitted to ``train`` with a held
    fixed (:func:`.inversion.solve_with_diffusivity`)."""
    from threadpoolctl import threadpool_limits

    from heat_platform.heat.inversion import solve_with_diffusivity

    with threadpool_limits(1):  # small sparse solves, reproducible on one thread
        solution = solve_with_diffusivity(spec, diffusivity, train.observations())
    error = solution.at(validation.x, validation.y, validation.t) - validation.u
    noise = float(np.sqrt(np.mean(validation.sigma**2)))
    return float(np.sqrt(np.mean(error**2))) / noise if noise else math.inf


def grid_boundary(module) -> np.ndarray:
    """The boundary nodes of a classical fit's grid: where its a is the boundary diffusivity.
    Between them a is the bilinear interpolant of those nodes, the discretisation's own
    approximation of a varying boundary diffusivity (up to ~1 % at a layered material's jump on
    a 2x-coarse grid), not a violation of it; its interior is judged on held-out readings."""
    ny, nx = (int(n) for n in module.a_nodes.shape)
    (x0, x1), (y0, y1) = module.domain_bounds.tolist()[:2]
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    edges = [np.column_stack([xs, np.full(nx, y)]) for y in (y0, y1)]
    edges += [np.column_stack([np.full(ny - 2, x), ys[1:-1]]) for x in (x0, x1)]
    return np.concatenate(edges)


def _inside(bounds: dict[str, tuple[float, float]], margin: float) -> dict:
    """The box shrunk by ``margin`` of each spatial side and of the time span."""
    return {axis: (lo + margin * (hi - lo), hi - margin * (hi - lo))
            for axis, (lo, hi) in bounds.items()}


def torchscript_predict(module) -> Predict:
    import torch

    def predict(x, y, t):
        x, y, t = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, t)))
        with torch.no_grad():
            out = module(torch.as_tensor(np.stack([x.ravel(), y.ravel(), t.ravel()], 1)))
        out = out.double().numpy()
        return out[:, 0].reshape(x.shape), out[:, 1].reshape(x.shape)

    return predict
