"""The PINNacle "HeatInv" reference case: the public benchmark the PINN is measured on.

u_t - div(a grad u) = f on [-1, 1]^2 x [0, 1] with a(x, y) = 2 + sin(pi x) sin(pi y) and
u = exp(-t) sin(pi x) sin(pi y); the PINN sees u at 2500 fixed points plus Gaussian noise of
standard deviation 0.1 and knows a = 2 on the spatial boundary (Hao et al., PINNacle,
NeurIPS 2024, arXiv:2306.08827; the points ship with their MIT licence in
``data/pinnacle_heatinv``). The truths below generate the observations and score results;
training never sees them.
"""

from __future__ import annotations

import numpy as np

from heat_platform.heat.observations import Observations
from heat_platform.heat.scaling import Scaling
from heat_platform.heat.spec import ProblemSpec
from heat_platform.heat.synthetic import SCENARIOS, pinnacle_points

NOISE_SIGMA = 0.1


def heatinv_spec() -> ProblemSpec:
    """The benchmark's problem as shipped (data/scenarios/pinnacle-heatinv.yaml)."""
    return SCENARIOS["pinnacle-heatinv"].spec


def heatinv_points() -> np.ndarray:
    """The 2500 observation points, ``[2500, 3]`` with columns x, y, t."""
    return pinnacle_points()


def heatinv_observations(
    noise_seed: int = 0, sigma: float = NOISE_SIGMA, spec: ProblemSpec | None = None
) -> Observations:
    """The benchmark's training data: the true u at the shipped points plus N(0, sigma^2) noise
    drawn with ``numpy.random.default_rng(noise_seed)``."""
    spec = spec or heatinv_spec()
    x, y, t = heatinv_points().T
    u = spec.temperature_truth(x=x, y=y, t=t)
    u = u + sigma * np.random.default_rng(noise_seed).standard_normal(u.shape)
    return Observations(x=x, y=y, t=t, u=u, sigma=np.full_like(u, sigma))


def heatinv_scaling(observations: Observations, spec: ProblemSpec | None = None) -> Scaling:
    spec = spec or heatinv_spec()
    return Scaling.fit(spec.domain.bounds(), observations.u)
