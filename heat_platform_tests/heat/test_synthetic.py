"""Synthetic experiments: deterministic, faithful to the benchmark, and shifts that really shift."""

from __future__ import annotations

import numpy as np
import pytest

from heat_platform.heat.synthetic import (
    SCENARIOS,
    pinnacle_points,
    simulate_batch,
    true_diffusivity,
)

HEATINV = SCENARIOS["pinnacle-heatinv"]
INCLUSION = SCENARIOS["inclusion"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_seed_same_batch_bit_for_bit(name: str) -> None:
    first, again = simulate_batch(SCENARIOS[name], seed=7), simulate_batch(SCENARIOS[name], seed=7)
    for column, values in first.columns().items():
        np.testing.assert_array_equal(values, again.columns()[column])
    other = simulate_batch(SCENARIOS[name], seed=8)
    assert not np.array_equal(first.u, other.u)
    np.testing.assert_array_equal(first.u_clean, other.u_clean)


def test_pinnacle_heatinv_is_the_public_benchmark_exactly() -> None:
    batch = simulate_batch(HEATINV, seed=0)
    points = pinnacle_points()
    assert points.shape == (2500, 3)
    np.testing.assert_array_equal(np.column_stack([batch.x, batch.y, batch.t]), points)
    x, y, t = points.T
    np.testing.assert_allclose(batch.u_clean, np.exp(-t) * np.sin(np.pi * x) * np.sin(np.pi * y))
    noise = batch.u - batch.u_clean
    assert np.all(batch.sigma == 0.1)
    assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.006
    assert len(set(batch.sensor_id)) == 2500


def test_inclusion_lives_on_a_non_unit_domain_and_starts_cold() -> None:
    spec = INCLUSION.spec
    assert spec.domain.x == (0.0, 2.0) and spec.domain.t == (0.0, 0.5)
    batch = simulate_batch(INCLUSION, seed=0, noise_sigma=0.0)
    assert np.all(spec.domain.contains(batch.x, batch.y, batch.t))
    np.testing.assert_allclose(batch.u_clean[batch.t == 0.0], 0.0, atol=1e-12)
    # heated from inside: warm at the end, warmest near the source's centre
    last = batch.t == batch.t.max()
    hottest = np.argmax(batch.u_clean[last])
    assert batch.u_clean[last].max() > 0.5
    assert abs(batch.x[last][hottest] - 1.0) < 0.3
    assert len(batch.u) == 16 * 8 * 25


def test_material_shift_changes_temperatures_not_coordinates() -> None:
    base = simulate_batch(INCLUSION, seed=3)
    shifted = simulate_batch(INCLUSION, seed=3, shift="material")
    np.testing.assert_array_equal(base.x, shifted.x)
    np.testing.assert_array_equal(base.t, shifted.t)
    change = shifted.u_clean - base.u_clean
    sigma = INCLUSION.spec.noise_sigma
    # what drift monitoring sees: the old model's residuals grow well beyond the noise
    assert np.sqrt(np.mean(change**2)) > 1.5 * sigma and np.abs(change).max() > 5 * sigma
    a_old, a_new = true_diffusivity(INCLUSION), true_diffusivity(INCLUSION, "material")
    assert float(a_new(x=0.7, y=0.5)) > 3.5 > float(a_old(x=0.7, y=0.5))


def test_miscalibration_biases_a_quarter_of_the_sensors() -> None:
    base = simulate_batch(INCLUSION, seed=4)
    shifted = simulate_batch(INCLUSION, seed=4, shift="miscalibration")
    offset = shifted.u - base.u
    biased = {sensor for sensor, d in zip(shifted.sensor_id, offset, strict=True) if d > 0.01}
    assert len(biased) == round(0.25 * 16 * 8)
    np.testing.assert_allclose(offset[np.isin(shifted.sensor_id, list(biased))], 0.05)
    np.testing.assert_allclose(offset[~np.isin(shifted.sensor_id, list(biased))], 0.0)


def test_random_and_given_layouts() -> None:
    random = simulate_batch(INCLUSION, layout="random", sensors=(10, 1), n_times=3, seed=1)
    assert len(random.u) == 30 and len(set(random.sensor_id)) == 10
    assert np.all(INCLUSION.spec.domain.contains(random.x, random.y, random.t))
    given = simulate_batch(INCLUSION, layout="given", coordinates=np.array([[0.5, 0.5], [1.5, 0.25]]),
                           n_times=4)
    assert sorted(set(zip(given.x, given.y, strict=True))) == [(0.5, 0.5), (1.5, 0.25)]
    with pytest.raises(ValueError, match="unknown layout"):
        simulate_batch(INCLUSION, layout="hexagonal")
    with pytest.raises(ValueError, match="no shift"):
        simulate_batch(INCLUSION, shift="earthquake")
