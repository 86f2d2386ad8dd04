"""The one rule that decides the noise level of temperature readings.

Everything that needs the noise level (the PINN's data misfit and its floor, the classical
inversion's discrepancy principle, the gate's RMSE / noise, drift's misfit ratio) asks
:func:`noise_level`, in this order:

1. the readings' own ``sigma`` (a column of the batch), where given;
2. else the problem.yaml's ``noise_sigma``;
3. else an estimate from the readings themselves (:func:`estimate_noise`), with a warning.

The estimate uses what a diffusion experiment guarantees: a sensor's temperature is smooth in
time, so differences of consecutive readings of one sensor are mostly noise. For each sensor
with at least :data:`MIN_TIMES` readings, the third divided differences of its series (any time
steps), normalised to the noise's variance, are pure noise where the signal is locally
quadratic in time; the median absolute deviation over all sensors ignores the few differences a
fast transient inflates. (On the ten built-in scenarios: within -1 % to +15 % of the true
noise; second differences were up to +19 %.) Readings with no time series (one time per sensor, or
scattered points) fall back to the residuals of local linear fits on each point's nearest
neighbours in scaled (x, y, t), whose variance is sigma^2 up to a leverage factor. Either way
the estimate is an upper bound when the signal varies fast at the sampling's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_TIMES = 5  # a sensor's series needs this many readings to enter the time-difference estimate
NEIGHBOURS = 12  # points in each local linear fit of the fallback estimator
MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal sample -> its sigma


@dataclass(frozen=True)
class NoiseLevel:
    """The noise standard deviation of each reading and where it came from."""

    sigma: np.ndarray  # per reading
    source: str  # "readings", "spec", "estimated" or a mix such as "readings+spec"
    estimator: str | None = None  # how an estimate was made, when one was
    estimate: float | None = None  # the estimated sigma, when one was made
    warning: str | None = None  # for the people reading the training set's metadata

    @property
    def typical(self) -> float:
        """The RMS noise level of the readings."""
        return float(np.sqrt(np.mean(self.sigma**2)))

    def as_dict(self) -> dict:
        return {"source": self.source, "sigma_rms": self.typical, "estimator": self.estimator,
                "estimate": self.estimate, "warning": self.warning}


def noise_level(x, y, t, u, sigma=None, *, sensor=None, spec_sigma: float | None = None,
                bounds: dict[str, tuple[float, float]] | None = None) -> NoiseLevel:
    """The noise level of readings (x, y, t, u) by the platform's rule (module docstring).
    ``sigma`` may be None or hold NaN where a reading has none; ``sensor`` names each reading's
    sensor (for the time-difference estimate)."""
    u = np.asarray(u, dtype=float)
    given = (np.full(u.shape, np.nan) if sigma is None
             else np.asarray(sigma, dtype=float).copy())
    known = np.isfinite(given) & (given > 0)
    if known.all():
        return NoiseLevel(given, "readings")
    sources = ["readings"] if known.any() else []
    if spec_sigma is not None:
        given[~known] = spec_sigma
        return NoiseLevel(given, "+".join([*sources, "spec"]))
    estimate, estimator = estimate_noise(x, y, t, u, sensor=sensor, bounds=bounds)
    given[~known] = estimate
    warning = (f"no noise level given for {np.count_nonzero(~known)} of {u.size} readings (no "
               f"sigma column, no noise_sigma in problem.yaml): estimated {estimate:.3g} by "
               f"{estimator}; declare the real noise level for reliable fits and gates")
    return NoiseLevel(given, "+".join([*sources, "estimated"]), estimator, estimate, warning)


def estimate_noise(x, y, t, u, *, sensor=None,
                   bounds: dict[str, tuple[float, float]] | None = None) -> tuple[float, str]:
    """An estimate of the readings' noise standard deviation and the name of the estimator."""
    x, y, t, u = (np.asarray(v, dtype=float).ravel() for v in (x, y, t, u))
    if sensor is not None:
        differences = _time_differences(np.asarray(sensor).ravel(), t, u)
        if differences.size >= max(30, u.size // 4):
            mad = np.median(np.abs(differences - np.median(differences)))
            return float(MAD_TO_SIGMA * mad), "third differences of each sensor's time series (MAD)"
    return _local_linear(x, y, t, u, bounds), f"local linear fits on {NEIGHBOURS} neighbours"


def _time_differences(sensor: np.ndarray, t: np.ndarray, u: np.ndarray,
                      order: int = 3) -> np.ndarray:
    """Normalised divided differences of every sensor's series: each has the noise's variance
    where the signal is a polynomial of degree below ``order`` in time."""
    by_sensor_and_time = np.lexsort((t, sensor))
    sensor, t, u = (v[by_sensor_and_time] for v in (sensor, t, u))
    starts = np.flatnonzero(np.r_[True, sensor[1:] != sensor[:-1]])
    ends = np.r_[starts[1:], sensor.size]
    out = []
    for start, end in zip(starts, ends, strict=True):
        if end - start < MIN_TIMES:
            continue
        ts, us = t[start:end], u[start:end]
        if np.any(np.diff(ts) <= 0):
            continue  # repeated times of one sensor: no series
        # windows of order + 1 consecutive readings; the divided difference's weights
        # w_j = 1 / prod_{m != j} (t_j - t_m), divided by their norm so that white noise of
        # variance s^2 gives values of variance s^2 (equal steps: (-u0 + 3u1 - 3u2 + u3)/sqrt(20))
        n = len(ts) - order
        times = np.stack([ts[j:j + n] for j in range(order + 1)])
        values = np.stack([us[j:j + n] for j in range(order + 1)])
        weights = np.stack([1 / np.prod([times[j] - times[m] for m in range(order + 1) if m != j],
                                        axis=0) for j in range(order + 1)])
        out.append((weights * values).sum(axis=0) / np.sqrt((weights**2).sum(axis=0)))
    return np.concatenate(out) if out else np.empty(0)


def _local_linear(x, y, t, u, bounds) -> float:
    """sigma from the residuals of local linear fits in scaled (x, y, t), leverage corrected."""
    from scipy.spatial import cKDTree

    points = np.column_stack([x, y, t])
    if bounds is not None:
        lo = np.array([bounds[k][0] for k in ("x", "y", "t")])
        span = np.array([bounds[k][1] - bounds[k][0] for k in ("x", "y", "t")])
    else:
        lo, span = points.min(axis=0), np.ptp(points, axis=0)
    scaled = (points - lo) / np.where(span > 0, span, 1.0)
    k = min(NEIGHBOURS, len(u))
    _, neighbours = cKDTree(scaled).query(scaled, k=k)
    residuals = []
    for row in neighbours:
        design = np.column_stack([np.ones(k), scaled[row]])
        coef, *_ = np.linalg.lstsq(design, u[row], rcond=None)
        residuals.append(u[row[0]] - design[0] @ coef)
    residuals = np.asarray(residuals)
    # a linear fit with 4 parameters on k points leaves the centre's residual with variance
    # about (1 - 4/k) sigma^2
    mad = np.median(np.abs(residuals - np.median(residuals)))
    return float(MAD_TO_SIGMA * mad / np.sqrt(max(1 - 4 / k, 0.1)))
