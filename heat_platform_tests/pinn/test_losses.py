"""The divergence-form residual on analytic models: ~0 for the truth, clearly not for a lie."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from heat_platform.heat.heatinv import heatinv_spec
from heat_platform.heat.metrics import uniform_points
from heat_platform.pinn.losses import heat_residual, pde_residual


class HeatInvTruth(torch.nn.Module):
    """(x, y, t) -> (u, a) of the PINNacle HeatInv case, optionally with a wrong diffusivity."""

    def __init__(self, wrong_a: bool = False):
        super().__init__()
        self.wrong_a = wrong_a
        self.register_buffer("dtype_carrier", torch.zeros((), dtype=torch.float64))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x, y, t = points[:, 0], points[:, 1], points[:, 2]
        u = torch.exp(-t) * torch.sin(math.pi * x) * torch.sin(math.pi * y)
        a = 2 + torch.sin(math.pi * x) * torch.sin(math.pi * y)
        if self.wrong_a:
            a = 2 + 0 * a
        return torch.stack([u, a], dim=1)


@pytest.fixture(scope="module")
def spec():
    return heatinv_spec()


@pytest.fixture(scope="module")
def points(spec):
    p = uniform_points(spec.domain.bounds(), 3000, seed=1)
    return p["x"], p["y"], p["t"]


def test_residual_vanishes_for_the_exact_solution(spec, points):
    r = pde_residual(HeatInvTruth(), spec, *points)
    f = spec.source(x=points[0], y=points[1], t=points[2])
    assert r.shape == (3000,) and r.dtype == np.float64
    assert np.max(np.abs(r)) < 1e-9 * np.max(np.abs(f))


def test_residual_is_large_for_a_wrong_diffusivity(spec, points):
    r = pde_residual(HeatInvTruth(wrong_a=True), spec, *points)
    assert np.sqrt(np.mean(r**2)) > 1.0


def test_batches_and_broadcasting_do_not_change_the_result(spec, points):
    x, y, t = points
    whole = pde_residual(HeatInvTruth(wrong_a=True), spec, x, y, t)
    batched = pde_residual(HeatInvTruth(wrong_a=True), spec, x, y, t, batch_size=7)
    np.testing.assert_allclose(batched, whole, rtol=1e-12, atol=1e-12)
    grid = pde_residual(HeatInvTruth(wrong_a=True), spec, x[:5, None], y[:5, None], 0.5)
    assert grid.shape == (5, 1)


def test_plain_functions_and_constant_fields_work(spec):
    def steady_constant(points):  # u = 1, a = 1: residual = -f
        return torch.ones(len(points), 2, dtype=points.dtype)

    x, y, t = np.array([0.3, -0.2]), np.array([0.1, 0.5]), np.array([0.0, 0.7])
    r = pde_residual(steady_constant, spec, x, y, t)
    np.testing.assert_allclose(r, -spec.source(x=x, y=y, t=t), rtol=1e-6)


def test_heat_residual_matches_hand_derivatives():
    # u = x^2 y + t, a = 1 + x: u_t = 1, (a u_x)_x = d/dx((1 + x) 2xy) = 2y + 4xy,
    # (a u_y)_y = d/dy((1 + x) x^2) = 0, so r = 1 - 2y - 4xy - f.
    points = torch.tensor(
        [[0.5, 2.0, 0.1], [-1.0, 0.5, 3.0]], dtype=torch.float64, requires_grad=True
    )
    x, y, t = points.unbind(1)
    f = torch.tensor([0.25, -1.0], dtype=torch.float64)
    r = heat_residual(x**2 * y + t, 1 + x, points, f)
    expected = 1 - 2 * y - 4 * x * y - f
    torch.testing.assert_close(r, expected.detach())
