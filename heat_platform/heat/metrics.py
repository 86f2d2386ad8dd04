"""Error measures shared by the PINN, the classical inversion, the gate and the benchmarks,
and the points they are taken at."""

from __future__ import annotations

import numpy as np


def relative_l2(predicted, truth) -> float:
    """||predicted - truth|| / ||truth|| over all points."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    truth = np.asarray(truth, dtype=float).ravel()
    return float(np.linalg.norm(predicted - truth) / np.linalg.norm(truth))


def pinnacle_l2re(u_pred, a_pred, u_true, a_true) -> float:
    """PINNacle's L2RE for inverse problems: relative L2 error over the stacked outputs (u, a).

    sqrt(mean((yhat - y)^2)) / sqrt(mean(y^2)) with y = [u, a] per point, as in PINNacle's
    evaluation; because |a| >> |u| on HeatInv it is close to relL2(a).
    """
    predicted = np.stack([np.ravel(u_pred), np.ravel(a_pred)], axis=1)
    truth = np.stack([np.ravel(u_true), np.ravel(a_true)], axis=1)
    return float(np.sqrt(np.mean((predicted - truth) ** 2)) / np.sqrt(np.mean(truth**2)))


def uniform_points(bounds: dict[str, tuple[float, float]], n: int, seed: int = 0,
                   names: tuple[str, ...] = ("x", "y", "t")) -> dict[str, np.ndarray]:
    """``n`` points drawn uniformly from the box ``bounds`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(*bounds[name], size=n) for name in names}


def boundary_points(bounds: dict[str, tuple[float, float]], n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` points (x, y, t): (x, y) uniform on the perimeter of the spatial rectangle,
    t uniform in its span."""
    lo = np.array([bounds[name][0] for name in ("x", "y", "t")])
    hi = np.array([bounds[name][1] for name in ("x", "y", "t")])
    points = rng.uniform(lo, hi, (n, 3))
    side = rng.integers(0, 4, n)
    points[side == 0, 0], points[side == 1, 0] = lo[0], hi[0]
    points[side == 2, 1], points[side == 3, 1] = lo[1], hi[1]
    return points
