"""Temperature readings as the solvers take them: points (x, y, t), values u and their noise.

The one noise rule lives here too (:func:`known_noise`): training, the misfit floor and the
classical inversion all ask it for the readings' noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Observations:
    """Temperature readings u at points (x, y, t), physical units; ``sigma`` is the standard
    deviation of each reading's noise when known."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u: np.ndarray
    sigma: np.ndarray | None = None

    def __post_init__(self):
        for name in ("x", "y", "t", "u"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).ravel())
        if len({len(self.x), len(self.y), len(self.t), len(self.u)}) != 1 or not len(self.u):
            raise ValueError("Observations need x, y, t and u of one common, non-zero length")
        if self.sigma is not None:
            self.sigma = np.broadcast_to(
                np.asarray(self.sigma, dtype=np.float64), self.u.shape
            ).copy()
            if not np.all(self.sigma > 0):
                raise ValueError("Observations.sigma must be > 0")
        if not all(np.all(np.isfinite(getattr(self, n))) for n in ("x", "y", "t", "u")):
            raise ValueError("Observations must be finite")

    @property
    def points(self) -> np.ndarray:
        """``[N, 3]``: columns x, y, t."""
        return np.stack([self.x, self.y, self.t], axis=1)


def known_noise(observations: Observations, spec) -> np.ndarray | float | None:
    """The readings' noise standard deviation: their own sigma, else the spec's noise_sigma;
    None when neither says."""
    return observations.sigma if observations.sigma is not None else spec.noise_sigma
