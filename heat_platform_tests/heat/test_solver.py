"""The forward model: convergence orders on a manufactured solution, PINNacle HeatInv, interpolation."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest

from heat_platform.heat.metrics import relative_l2
from heat_platform.heat.solver import (
    ForwardSolution,
    Grid,
    assemble,
    interpolation_matrix,
    solve_heat,
    time_levels,
)

pi = np.pi

# --- Manufactured solution on a non-unit rectangle, non-constant a, non-zero boundary values ---
RECTANGLE = {"x": (0.0, 2.0), "y": (-1.0, 0.5)}


def mms_a(x, y):
    return 1.0 + 0.5 * np.sin(x) * np.cos(y)


def mms_u(x, y, t):
    return np.exp(-0.5 * t) * np.sin(2 * x + 1) * np.cos(1.5 * y) + 0.25 * x * y


def mms_f(x, y, t):
    """u_t - (a_x u_x + a u_xx + a_y u_y + a u_yy) for the pair above."""
    e, s, c = np.exp(-0.5 * t), np.sin(2 * x + 1), np.cos(1.5 * y)
    a = mms_a(x, y)
    a_x, a_y = 0.5 * np.cos(x) * np.cos(y), -0.5 * np.sin(x) * np.sin(y)
    u_x = 2 * e * np.cos(2 * x + 1) * c + 0.25 * y
    u_y = -1.5 * e * s * np.sin(1.5 * y) + 0.25 * x
    u_xx, u_yy = -4 * e * s * c, -2.25 * e * s * c
    return -0.5 * e * s * c - (a_x * u_x + a * u_xx + a_y * u_y + a * u_yy)


def mms_solve(nx: int, ny: int, n_steps: int) -> ForwardSolution:
    grid = Grid(RECTANGLE["x"], RECTANGLE["y"], nx, ny)
    u0 = lambda x, y: mms_u(x, y, 0.0)  # noqa: E731
    return solve_heat(grid, mms_a, mms_f, mms_u, u0, (0.0, 1.0), n_steps)


def nodal_error(solution: ForwardSolution) -> float:
    g = solution.grid
    exact = mms_u(g.X[None], g.Y[None], solution.times[:, None, None])
    return relative_l2(solution.u, exact)


def fitted_order(h, errors) -> float:
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


def test_operator_is_symmetric_and_exact_on_quadratics():
    """With face-averaged a the 5-point operator is symmetric and, for a linear in x and y,
    reproduces div(a grad u) exactly for quadratic u (second-order consistency)."""
    grid = Grid((0.0, 2.0), (-1.0, 0.5), 7, 5)
    a = 1.0 + 0.3 * grid.X - 0.2 * grid.Y
    op = assemble(grid, a)
    assert abs(op.interior - op.interior.T).max() == 0.0
    u = grid.X**2 + grid.X * grid.Y - 2 * grid.Y**2
    # div(a grad u) = a_x u_x + a_y u_y + a (u_xx + u_yy)
    exact = 0.3 * (2 * grid.X + grid.Y) - 0.2 * (grid.X - 4 * grid.Y) + a * (2 - 4)
    discrete = op.interior @ u[grid.interior] + op.boundary @ u[grid.boundary]
    np.testing.assert_allclose(discrete, exact[grid.interior], rtol=1e-10, atol=1e-10)


def test_spatial_convergence_is_second_order():
    # dt = h / 2 with Crank-Nicolson: the whole error is O(h^2); hx = hy on the 2 x 1.5 box
    sizes = [(8, 6), (16, 12), (32, 24), (64, 48)]
    errors = [nodal_error(mms_solve(nx, ny, nx // 2)) for nx, ny in sizes]
    h = [2.0 / nx for nx, _ in sizes]
    order = fitted_order(h, errors)
    assert order == pytest.approx(2.0, abs=0.2), (order, errors)
    assert errors[-1] < 2e-4  # measured 1.18e-4, fitted order 1.96


def test_time_convergence_of_crank_nicolson_is_second_order():
    # On one spatial grid, against a much finer time step: only the time error remains
    # measured orders 2.08, 2.00, 2.00 (from dt = 1/8 the first halving is still pre-asymptotic)
    reference = mms_solve(16, 12, 2048).u[-1]
    steps = [16, 32, 64, 128]
    errors = [relative_l2(mms_solve(16, 12, n).u[-1], reference) for n in steps]
    order = fitted_order([1.0 / n for n in steps], errors)
    assert order == pytest.approx(2.0, abs=0.2), (order, errors)


# --- PINNacle HeatInv: a = 2 + sin(pi x) sin(pi y), u = exp(-t) sin(pi x) sin(pi y) ---
def heatinv_a(x, y):
    return 2.0 + np.sin(pi * x) * np.sin(pi * y)


def heatinv_u(x, y, t):
    return np.exp(-t) * np.sin(pi * x) * np.sin(pi * y)


def heatinv_f(x, y, t):
    sx, sy, cx, cy = np.sin(pi * x), np.sin(pi * y), np.cos(pi * x), np.cos(pi * y)
    return np.exp(-t) * (
        (4 * pi**2 - 1) * sx * sy + pi**2 * (2 * sx**2 * sy**2 - cx**2 * sy**2 - sx**2 * cy**2)
    )


def heatinv_points() -> np.ndarray:
    path = files("heat_platform.heat") / "data" / "pinnacle_heatinv" / "heatinv_points.dat"
    return np.loadtxt(str(path))


def test_pinnacle_heatinv_forward_solution():
    grid = Grid((-1.0, 1.0), (-1.0, 1.0), 64, 64)
    u0 = lambda x, y: np.sin(pi * x) * np.sin(pi * y)  # noqa: E731
    solution = solve_heat(grid, heatinv_a, heatinv_f, 0.0, u0, (0.0, 1.0), 64)
    exact = heatinv_u(grid.X[None], grid.Y[None], solution.times[:, None, None])
    assert relative_l2(solution.u, exact) < 1e-3  # measured 8.2e-4 at the nodes
    x, y, t = heatinv_points().T
    # measured 1.24e-3; most of it is trilinear interpolation (exact node values: 1.7e-3)
    assert relative_l2(solution.at(x, y, t), heatinv_u(x, y, t)) < 1.5e-3


def test_trilinear_interpolation_is_exact_for_trilinear_fields():
    grid = Grid((0.0, 2.0), (-1.0, 0.5), 5, 4)
    times = time_levels((0.5, 1.5), 3)
    field = lambda x, y, t: 1 + x - 2 * y + 3 * t + x * y * t - 0.5 * y * t  # noqa: E731
    u = field(grid.X[None], grid.Y[None], times[:, None, None])
    solution = ForwardSolution(grid, times, u)
    rng = np.random.default_rng(0)
    x, y, t = rng.uniform(0, 2, 50), rng.uniform(-1, 0.5, 50), rng.uniform(0.5, 1.5, 50)
    x[:2], y[:2], t[:2] = (0.0, 2.0), (-1.0, 0.5), (0.5, 1.5)  # corners of the box
    np.testing.assert_allclose(solution.at(x, y, t), field(x, y, t), rtol=1e-12, atol=1e-12)
    H = interpolation_matrix(grid, times, x, y, t)
    np.testing.assert_allclose(H.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="outside"):
        solution.at(np.array([2.1]), np.array([0.0]), np.array([1.0]))


def test_boundary_values_and_initial_state_are_imposed():
    solution = mms_solve(8, 6, 4)
    g = solution.grid
    for n, t in enumerate(solution.times):
        np.testing.assert_allclose(solution.u[n][g.boundary], mms_u(g.X, g.Y, t)[g.boundary])
    np.testing.assert_allclose(solution.u[0], mms_u(g.X, g.Y, 0.0))


def test_rejects_non_positive_diffusivity():
    with pytest.raises(ValueError, match="positive"):
        solve_heat(Grid((0, 1), (0, 1), 4, 4), 0.0, None, 0.0, 0.0, (0, 1), 2)
