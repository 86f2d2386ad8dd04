"""The classical inversion: exact adjoint gradient, recovery of a known a, bounds, fixed boundary."""

from __future__ import annotations

import numpy as np
import pytest

from heat_platform.heat.inversion import (
    InverseProblem,
    TemperatureKnots,
    invert_diffusivity,
    perimeter_coordinate,
)
from heat_platform.heat.metrics import relative_l2
from heat_platform.heat.solver import Grid, solve_heat

# --- A synthetic experiment on a non-unit rectangle: a smooth bump in a, known on the boundary
DOMAIN = {"x": (0.0, 2.0), "y": (-1.0, 0.5), "t": (0.0, 0.5)}
SIGMA = 0.03


def a_true(x, y):
    return 1.0 + 0.6 * np.exp(-((x - 1.1) ** 2 + (y + 0.3) ** 2) / 0.25)


def u0(x, y):
    return np.sin(0.5 * np.pi * x) * np.cos(np.pi * (y + 0.25) / 1.5) + 0.2 * x


def g(x, y, t):
    return u0(x, y) * np.exp(-t)


def f(x, y, t):
    return 4.0 * np.exp(-t) * (1 + np.cos(np.pi * x) * np.sin(np.pi * y))


@pytest.fixture(scope="module")
def experiment():
    """800 noisy observations of a solve on a grid 4x finer than the inversion's (no inverse
    crime: the inversion's own discretisation error is part of what it must live with)."""
    fine = solve_heat(Grid(DOMAIN["x"], DOMAIN["y"], 64, 48), a_true, f, g, u0, DOMAIN["t"], 100)
    rng = np.random.default_rng(0)
    x, y, t = (rng.uniform(*DOMAIN[k], 800) for k in "xyt")
    return {"x": x, "y": y, "t": t, "u": fine.at(x, y, t) + rng.normal(0, SIGMA, x.size)}


def invert(observations, **kwargs):
    options = dict(
        domain=DOMAIN,
        source=f,
        boundary_diffusivity=a_true,
        nx=16,
        ny=12,
        n_steps=20,
        noise_sigma=SIGMA,
    )
    return invert_diffusivity(observations, **(options | kwargs))


def a_error(result) -> float:
    return relative_l2(result.a_nodes, a_true(result.grid.X, result.grid.Y))


# --- The gradient
@pytest.mark.parametrize("penalty", ["gradient", "laplacian"])
@pytest.mark.parametrize("boundary_known", [True, False])
def test_adjoint_gradient_matches_central_differences(penalty, boundary_known):
    """Exact discrete adjoint: every component of dJ/dm (a, coarse u0, coarse g) agrees with
    central differences of J to ~1e-6 (measured ~1e-8)."""
    rng = np.random.default_rng(1)
    n = 40
    observations = {k: rng.uniform(*DOMAIN[k], n) for k in "xyt"} | {"u": rng.normal(size=n)}
    problem, m0 = InverseProblem.build(
        observations,
        DOMAIN,
        source=f,
        boundary_diffusivity=1.5 if boundary_known else None,
        nx=5,
        ny=4,
        n_steps=6,
        penalty=penalty,
        noise_sigma=rng.uniform(0.2, 0.4, n),
        temperature_ratios=(0.7, 1.3),
        temperature_knots=TemperatureKnots(cells=(3, 2), perimeter=7, levels=4),
    )
    m = m0.copy()
    m[: problem.n_a] = rng.uniform(0.5, 2.0, problem.n_a)
    m[problem.n_a :] = rng.normal(size=problem.size - problem.n_a)
    weight = 0.37
    _, grad = problem.objective(m, weight)
    eps = 1e-6
    central = np.array(
        [
            (problem.objective(m + eps * e, weight)[0] - problem.objective(m - eps * e, weight)[0])
            / (2 * eps)
            for e in np.eye(m.size)
        ]
    )
    assert problem.n_u0 == 12 and problem.size == problem.n_a + 12 + 28
    assert np.max(np.abs(central - grad)) < 1e-6 * np.max(np.abs(grad))


# --- Recovery
def test_recovers_smooth_diffusivity_with_known_initial_and_boundary_temperatures(experiment):
    result = invert(experiment, initial_temperature=u0, boundary_temperature=g, penalty="gradient")
    # discrepancy principle: the largest weight tried with chi^2 / n <= 1
    assert 0.97 <= result.chi2_per_observation <= 1.0
    assert a_error(result) < 0.08  # measured 0.051 (a = 1 + a 0.6 bump, 3 % noise)
    # the bump is there: highest fitted value near its centre (1.1, -0.3), within two cells
    j, i = np.unravel_index(np.argmax(result.a_nodes), result.a_nodes.shape)
    assert abs(result.grid.xs[i] - 1.1) <= 0.25 and abs(result.grid.ys[j] + 0.3) <= 0.25


def test_recovers_diffusivity_with_unknown_initial_and_boundary_temperatures(experiment):
    result = invert(experiment, penalty="laplacian")
    assert 0.97 <= result.chi2_per_observation <= 1.0
    assert a_error(result) < 0.08  # measured 0.041
    x, y, t = experiment["x"], experiment["y"], experiment["t"]
    # the estimated u0 and g give temperatures within the noise: |fit - data| ~ sigma
    rms = np.sqrt(np.mean((result.temperature(x, y, t) - experiment["u"]) ** 2))
    assert rms == pytest.approx(SIGMA, rel=0.05)


def test_fixed_weight_bounds_and_fixed_boundary(experiment):
    """Bounds that cut through the truth (1 .. 1.6) are respected and active; boundary nodes
    keep the known boundary diffusivity exactly."""
    lo, hi = 1.05, 1.15
    result = invert(
        experiment,
        initial_temperature=u0,
        boundary_temperature=g,
        penalty="gradient",
        weight=1.0,
        bounds=(lo, hi),
    )
    grid, a = result.grid, result.a_nodes
    interior = a[grid.interior]
    assert interior.min() >= lo - 1e-12 and interior.max() <= hi + 1e-12
    assert np.isclose(interior.max(), hi) and np.isclose(interior.min(), lo)
    np.testing.assert_array_equal(a[grid.boundary], a_true(grid.X, grid.Y)[grid.boundary])
    assert result.weight == 1.0 and len(result.history) == 1
    np.testing.assert_allclose(result.diffusivity(grid.X, grid.Y), a, rtol=1e-12)


def test_callback_sees_every_iteration(experiment):
    seen = []
    result = invert(
        experiment,
        initial_temperature=u0,
        boundary_temperature=g,
        penalty="gradient",
        weight=10.0,
        callback=lambda iteration, metrics: seen.append((iteration, metrics)),
    )
    assert [i for i, _ in seen] == list(range(1, result.iterations + 1))
    assert set(seen[-1][1]) == {"weight", "objective", "chi2_per_observation"}


def test_discrepancy_principle_needs_sigma(experiment):
    with pytest.raises(ValueError, match="sigma"):
        invert(experiment, noise_sigma=None)


def test_perimeter_coordinate_runs_once_around_the_rectangle():
    grid = Grid((0.0, 2.0), (-1.0, 0.5), 4, 3)
    s = np.sort(perimeter_coordinate(grid))
    assert s[0] == 0.0 and s[-1] < 7.0 and np.all(np.diff(s) > 0)
    np.testing.assert_allclose(np.diff(s), [0.5] * 4 + [0.5] * 3 + [0.5] * 4 + [0.5] * 2)


def test_coarse_search_then_requested_grid(experiment):
    """With coarse_search the weight is searched on half the cells and steps first, and the
    search finishes on the requested grid from the prolonged solution. (Noisier data here:
    at 8 x 8 cells and sigma = 0.03 the coarse grid's own error would hide the noise level,
    and the search would rightly fall back to the requested grid.)"""
    sigma = float(np.hypot(SIGMA, 0.05))
    extra = np.random.default_rng(5).normal(0.0, 0.05, experiment["u"].size)
    noisier = experiment | {"u": experiment["u"] + extra}
    result = invert(
        noisier, initial_temperature=u0, boundary_temperature=g, nx=16, ny=16, noise_sigma=sigma
    )
    coarse = [step for step in result.history if step["grid"] == "8x8x10"]
    fine = [step for step in result.history if step["grid"] == "16x16x20"]
    assert len(coarse) + len(fine) == len(result.history) and coarse and fine
    assert fine[0]["weight"] in [step["weight"] for step in coarse]
    assert result.a_nodes.shape == (17, 17)
    assert 0.99 <= result.chi2_per_observation <= 1.0
    assert a_error(result) < 0.1


# --- A given a through the solver (how the gate compares the a of models of any kind)
def _readings(name: str, seed: int = 1, **kwargs):
    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch
    from heat_platform.models.scoring import Readings

    scenario = SCENARIOS[name]
    batch = simulate_batch(scenario, seed=seed, **kwargs)
    return scenario.spec, Readings(batch.x, batch.y, batch.t, batch.u, batch.sigma)


def test_the_inversions_own_a_through_the_solver_gives_back_its_u():
    from heat_platform.heat.inversion import invert_spec, solve_with_diffusivity

    spec, readings = _readings("tiny-fast", sensors=(6, 6), n_times=8)  # u0 and g stated
    result = invert_spec(spec, readings, nx=10, ny=10, n_steps=16)
    solution = solve_with_diffusivity(spec, result.diffusivity, readings,
                                      nx=10, ny=10, n_steps=16)
    np.testing.assert_allclose(solution.u, result.solution.u, rtol=0, atol=1e-12)


def test_unknown_temperatures_are_fitted_with_a_held_fixed():
    """layers-decay does not state its initial state: it is fitted to the readings with a held,
    so that the true a predicts other sensors (another batch) down to the noise, and a wrong a,
    whose fitted initial state soaks up part of its error, does not."""
    from heat_platform.heat.inversion import solve_with_diffusivity

    spec, train = _readings("layers-decay", sensors=(30, 1), n_times=10)
    _, other = _readings("layers-decay", seed=2, sensors=(30, 1), n_times=10)

    def fit(diffusivity) -> tuple[float, float]:
        u = solve_with_diffusivity(spec, diffusivity, train, nx=16, ny=16, n_steps=24)
        return tuple(float(np.sqrt(np.mean(((u.at(r.x, r.y, r.t) - r.u) / r.sigma) ** 2)))
                     for r in (train, other))

    truth = fit(lambda x, y: spec.diffusivity_truth(x=x, y=y))
    swapped = fit(lambda x, y: spec.diffusivity_truth(x=x, y=2 - y))  # the layers swapped
    assert truth[0] < 1.1  # measured 1.00 on the readings it was fitted to, 1.16 on the others
    assert swapped[0] > 1.1 * truth[0] and swapped[1] > 1.1 * truth[1]  # measured 1.23, 1.39
