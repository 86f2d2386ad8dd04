"""The classical inversion as a servable model: its TorchScript file answers exactly like the
solver's interpolation, in physical units, with the PINN artifact's interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heat_platform.heat.inversion import invert_spec
from heat_platform.heat.solver import bilinear
from heat_platform.heat.synthetic import SCENARIOS, simulate_batch
from heat_platform.models.classical_module import export_classical
from heat_platform.models.scoring import (
    Readings,
    load_model,
    model_residual,
    relative_residual,
    score_torchscript,
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    scenario = SCENARIOS["inclusion"]
    batch = simulate_batch(scenario, seed=1, sensors=(10, 5), n_times=10)
    readings = Readings(batch.x, batch.y, batch.t, batch.u, batch.sigma)
    result = invert_spec(scenario.spec, readings, nx=12, ny=8, n_steps=20)
    path = export_classical(result, tmp_path_factory.mktemp("classical") / "model.pt",
                            {"spec_name": "inclusion"})
    return scenario.spec, result, path, readings


def test_the_artifact_is_the_fit_interpolated(fitted):
    _, result, path, _ = fitted
    module, kind = load_model(path)
    assert kind == "classical"
    rng = np.random.default_rng(0)
    x, y, t = rng.uniform(0, 2, 500), rng.uniform(0, 1, 500), rng.uniform(0, 0.5, 500)
    points = torch.tensor(np.column_stack([x, y, t]))
    with torch.no_grad():
        u, a = module(points).numpy().T
        assert np.allclose(module.temperature(points).numpy(), u)
        assert np.allclose(module.diffusivity(points[:, :2]).numpy(), a)
    np.testing.assert_allclose(u, result.solution.at(x, y, t), atol=1e-12)
    np.testing.assert_allclose(a, bilinear(result.grid, result.a_nodes, x, y), atol=1e-12)
    assert module.in_domain(points).all()


def test_points_outside_take_the_nearest_edge_and_are_flagged(fitted):
    path = fitted[2]
    module, _ = load_model(path)
    outside = torch.tensor([[2.5, 0.5, 0.25], [1.0, -1.0, 0.25], [1.0, 0.5, 9.0]])
    edge = torch.tensor([[2.0, 0.5, 0.25], [1.0, 0.0, 0.25], [1.0, 0.5, 0.5]])
    with torch.no_grad():
        assert torch.allclose(module(outside.float()), module(edge))  # any float dtype in
        assert not module.in_domain(outside).any()


def test_it_is_scored_like_any_model_with_a_finite_difference_residual(fitted):
    spec, result, path, readings = fitted
    scores = score_torchscript(path, spec, readings)
    assert scores.a_finite and scores.boundary_violation < 1e-9  # a = a_b on the edges
    assert scores.rmse_to_noise < 3 and scores.residual_relative is not None
    # at its interior nodes and half time steps the finite-difference residual is its own
    # discretisation (Crank-Nicolson, face a the mean of two nodes): the fit solves it, up to
    # the source taken at the half step instead of averaged over it
    module, kind = load_model(path)
    grid, times = result.grid, result.solution.times
    X, Y = np.meshgrid(grid.xs[1:-1], grid.ys[1:-1])
    T = (times[:-1] + times[1:]) / 2
    x, y, t = (np.broadcast_to(v, (len(T), *X.shape)).ravel() for v in (X, Y, T[:, None, None]))
    r, u_t = model_residual(module, kind, spec)(x, y, t)
    points = {"x": x, "y": y, "t": t}
    assert relative_residual(r, u_t, spec, points) < 0.01


def test_its_boundary_is_judged_at_its_grid_nodes(tmp_path):
    """A boundary diffusivity that jumps along the edge (layers) is held exactly at the grid's
    boundary nodes; between them the bilinear interpolant misses it by up to ~1 %, which the gate
    used to count as a violation (rejecting the better fit of rod-layers-long)."""
    from heat_platform.models.scoring import grid_boundary, score, torchscript_predict

    scenario = SCENARIOS["rod-layers-long"]
    spec = scenario.spec
    batch = simulate_batch(scenario, seed=1, sensors=(8, 3), n_times=8)
    readings = Readings(batch.x, batch.y, batch.t, batch.u, batch.sigma)
    result = invert_spec(spec, readings, nx=16, ny=6, n_steps=16)
    path = export_classical(result, tmp_path / "model.pt", {"spec_name": spec.name})
    module, _ = load_model(path)

    nodes = grid_boundary(module)
    assert len(nodes) == 2 * 17 + 2 * 5
    at_nodes = score_torchscript(path, spec, readings)
    assert at_nodes.boundary_violation < 1e-9
    between = score(torchscript_predict(module), spec, readings, residual=None)
    assert between.boundary_violation > 1e-3  # the interpolant between the nodes


def test_its_a_through_the_solver_is_its_own_fit(tmp_path):
    """Scored with the training readings too, a model's a goes through the classical solver
    (the gate's truth-free measure of a): for a classical fit at the solver's grid, with the
    initial and boundary temperatures stated, that is its own u, so the same held-out error."""
    scenario = SCENARIOS["tiny-fast"]
    spec = scenario.spec
    train, held_out = (simulate_batch(scenario, seed=seed, sensors=(6, 6), n_times=8)
                       for seed in (1, 2))
    train, held_out = (Readings(b.x, b.y, b.t, b.u, b.sigma) for b in (train, held_out))
    path = export_classical(invert_spec(spec, train), tmp_path / "model.pt",
                            {"spec_name": spec.name})
    assert score_torchscript(path, spec, held_out).solver_rmse_to_noise is None
    scores = score_torchscript(path, spec, held_out, train=train)
    assert scores.solver_rmse_to_noise == pytest.approx(scores.rmse_to_noise, rel=1e-6)
    assert "solver_rmse_to_noise" in scores.metrics()
