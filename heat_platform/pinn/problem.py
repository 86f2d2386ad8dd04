"""The inverse problem as DeepXDE trains it: the points and the loss terms.

* **observations**: the misfit (u - u_obs) / sigma at the sensors (sigma per reading, else the
  spec's ``noise_sigma``, else the temperature's spread: :func:`.heat.observations.known_noise`),
  so at the noise level the data loss is about 1; with ``misfit_floor`` the data term stops
  rewarding a fit closer than the noise (:func:`.losses.floored_misfit`).
* **PDE**: the residual in divergence form (:func:`.losses.heat_residual`) at collocation points
  drawn uniformly from the domain and redrawn every ``resample_every`` Adam steps, plus (by
  default) at the observation points. Autograd differentiates through the input scaling, which
  is the rewritten PDE u_t = (su/st) v_tau, d/dx(a u_x) = (su/sx^2) d/dxi(a v_xi); the residual
  is measured in units of su/st, the scaled temperature per scaled time, or (``pde_scale``
  balanced) of sqrt((su/st)^2 + mean f^2), the size of the terms it balances.
* **boundary**: only for a soft boundary diffusivity, the relative deviation of a from a_b at
  points on the spatial boundary (by default a_b holds exactly, :mod:`.network`).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from heat_platform.heat.metrics import boundary_points
from heat_platform.heat.observations import Observations, known_noise
from heat_platform.heat.scaling import Scaling
from heat_platform.pinn.backend import dde
from heat_platform.pinn.config import PINNConfig
from heat_platform.pinn.losses import floored_misfit, heat_residual

BOUNDARY_POINTS = 256  # (x, y) samples on the spatial boundary for the soft boundary loss on a
CONDITION_POINTS = 256  # samples of each known condition on u (boundary, initial temperature)


class HeatData(dde.data.Data):
    """Observation points first, then collocation points, then (for a soft boundary on a)
    points on the spatial boundary, then (where the spec knows them and
    ``config.known_conditions``) points where u is known: the spatial boundary (its boundary
    temperature) and the initial time (its initial temperature); one loss term each, named in
    :attr:`term_names`."""

    def __init__(
        self,
        spec,
        train: Observations,
        scaling: Scaling,
        config: PINNConfig,
        rng: np.random.Generator,
    ):
        self.spec, self.config, self.rng = spec, config, rng
        bounds = spec.domain.bounds()
        self.bounds = bounds
        self.lo = np.array([bounds[k][0] for k in ("x", "y", "t")])
        self.hi = np.array([bounds[k][1] for k in ("x", "y", "t")])
        self.real = np.float32 if config.dtype == "float32" else np.float64
        self.observed = train.points
        self.u_observed = train.u[:, None].astype(self.real)
        sigma = known_noise(train, spec)
        if sigma is None:
            sigma = scaling.u.scale
        self.sigma = torch.as_tensor(
            np.broadcast_to(sigma, train.u.shape).copy(), dtype=torch.get_default_dtype()
        )
        self.pde_scale = scaling.u.scale / scaling.t.scale
        if config.pde_scale == "balanced":  # the size of the terms the residual balances
            spread = np.random.default_rng([config.seed, 3]).uniform(self.lo, self.hi, (4096, 3))
            points = np.concatenate([self.observed, spread])
            f = np.asarray(spec.source(x=points[:, 0], y=points[:, 1], t=points[:, 2]),
                           dtype=float)
            self.pde_scale = float(np.sqrt(self.pde_scale**2 + np.mean(f**2)))
        self.soft_boundary = (
            spec.boundary_diffusivity is not None and not config.hard_boundary_a
        )
        # known values of u, weighed like readings at the typical noise level: u = g on the
        # spatial boundary, u = u0 at t0, where the problem.yaml states them
        self.conditions = [name for name in ("boundary_temperature", "initial_temperature")
                           if config.known_conditions and getattr(spec, name) is not None]
        self.condition_sigma = float(torch.sqrt(torch.mean(self.sigma**2)))
        self.term_names = ["loss_pde", "loss_data"]
        self.term_names += ["loss_boundary_a"] if self.soft_boundary else []
        self.term_names += ["loss_conditions"] if self.conditions else []
        self.last_losses = None
        self.resample()

    def resample(self) -> None:
        self.collocation = self.rng.uniform(self.lo, self.hi, (self.config.n_domain, 3))
        if self.soft_boundary:
            self.boundary = boundary_points(self.bounds, BOUNDARY_POINTS, self.rng)
        if self.conditions:
            self.known = self._condition_points()
        self._batch = None

    def _condition_points(self) -> np.ndarray:
        """Points (x, y, t) with the known u as a 4th column."""
        parts = []
        if "boundary_temperature" in self.conditions:
            points = boundary_points(self.bounds, CONDITION_POINTS, self.rng)
            g = self.spec.boundary_temperature(x=points[:, 0], y=points[:, 1], t=points[:, 2])
            parts.append(np.column_stack([points, np.broadcast_to(g, len(points))]))
        if "initial_temperature" in self.conditions:
            points = self.rng.uniform(self.lo, self.hi, (CONDITION_POINTS, 3))
            points[:, 2] = self.lo[2]
            u0 = self.spec.initial_temperature(x=points[:, 0], y=points[:, 1])
            parts.append(np.column_stack([points, np.broadcast_to(u0, len(points))]))
        return np.concatenate(parts)

    def get_state(self) -> dict:
        return {
            "collocation": torch.from_numpy(self.collocation),
            "boundary": torch.from_numpy(self.boundary) if self.soft_boundary else None,
            "known": torch.from_numpy(self.known) if self.conditions else None,
            "rng": json.dumps(self.rng.bit_generator.state),
        }

    def set_state(self, state: dict) -> None:
        self.collocation = state["collocation"].numpy()
        if self.soft_boundary:
            self.boundary = state["boundary"].numpy()
        if self.conditions:
            self.known = state["known"].numpy()
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._batch = None

    def train_next_batch(self, batch_size=None):
        if self._batch is None:
            parts = [self.observed, self.collocation]
            parts += [self.boundary] if self.soft_boundary else []
            parts += [self.known[:, :3]] if self.conditions else []
            self._batch = np.concatenate(parts).astype(self.real)
            self._known_u = (torch.as_tensor(self.known[:, 3], dtype=torch.get_default_dtype())
                             if self.conditions else None)
        return self._batch, self.u_observed

    def test(self):
        return self.train_next_batch()

    def losses(self, targets, outputs, loss_fn, inputs, model, aux=None):
        n_obs, n_pde = len(self.observed), len(self.observed) + len(self.collocation)
        u, a = outputs[:, 0], outputs[:, 1]
        points = inputs.detach()
        f = self.spec.source(x=points[:, 0], y=points[:, 1], t=points[:, 2])
        r = heat_residual(u, a, inputs, f) / self.pde_scale
        r = r[0 if self.config.pde_at_observations else n_obs : n_pde]
        misfit = (u[:n_obs] - targets[:, 0]) / self.sigma
        losses = [torch.mean(r**2), torch.mean(misfit**2)]
        n_soft = n_pde + (len(self.boundary) if self.soft_boundary else 0)
        if self.soft_boundary:
            a_b = self.spec.boundary_diffusivity(x=points[n_pde:n_soft, 0],
                                                 y=points[n_pde:n_soft, 1])
            losses.append(torch.mean(((a[n_pde:n_soft] - a_b) / a_b) ** 2))
        if self.conditions:
            known = self._known_u.to(u.device, u.dtype)
            losses.append(torch.mean(((u[n_soft:] - known) / self.condition_sigma) ** 2))
        if model.net.training:  # the training batch; DeepXDE's test copy of it goes stale
            self.last_losses = torch.stack(losses).detach()  # logged: before any floor
        if self.config.misfit_floor:
            losses[1] = floored_misfit(losses[1], self.config.misfit_floor)
        return losses
