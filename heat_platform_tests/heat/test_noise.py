"""One noise rule: the readings' sigma, else the spec's noise_sigma, else an estimate from the
readings (with a warning), used by every consumer."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from heat_platform.heat.noise import estimate_noise, noise_level
from heat_platform.heat.synthetic import SCENARIOS, simulate_batch


def test_the_readings_sigma_then_the_spec_then_an_estimate():
    x = y = t = u = np.zeros(4)
    assert noise_level(x, y, t, u, np.full(4, 0.2)).source == "readings"
    mixed = noise_level(x, y, t, u, np.array([0.2, np.nan, 0.2, np.nan]), spec_sigma=0.05)
    assert mixed.source == "readings+spec" and list(mixed.sigma) == [0.2, 0.05, 0.2, 0.05]
    assert mixed.warning is None


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s.layout != "pinnacle"])
def test_the_estimate_from_time_series_is_close_to_the_true_noise(name):
    scenario = SCENARIOS[name]
    batch = simulate_batch(scenario, seed=1)
    true = scenario.noise if scenario.noise is not None else scenario.spec.noise_sigma
    estimate, estimator = estimate_noise(batch.x, batch.y, batch.t, batch.u,
                                         sensor=batch.sensor_id)
    assert "time series" in estimator
    assert 0.9 * true < estimate < 1.2 * true


def test_scattered_readings_fall_back_to_local_fits_and_warn():
    scenario = SCENARIOS["pinnacle-heatinv"]  # 2500 points, one reading per place and time
    batch = simulate_batch(scenario, seed=1)
    level = noise_level(batch.x, batch.y, batch.t, batch.u, sensor=batch.sensor_id,
                        bounds=scenario.spec.domain.bounds())
    assert level.source == "estimated" and "local linear" in level.estimator
    assert 0.8 * 0.1 < level.estimate < 1.3 * 0.1
    assert "no noise level given" in level.warning


def test_readings_without_sigma_get_the_estimate_not_the_temperature_spread():
    from heat_platform.models.scoring import Readings

    scenario = SCENARIOS["boundary-formula"]  # no sigma column, no noise_sigma
    batch = simulate_batch(scenario, seed=2)
    frame = pl.DataFrame(batch.columns())
    assert "sigma" not in frame.columns and scenario.spec.noise_sigma is None
    readings = Readings.from_frame(frame, scenario.spec)
    assert 0.9 * scenario.noise < readings.sigma[0] < 1.2 * scenario.noise
    assert readings.sigma[0] < 0.5 * float(np.std(batch.u))  # not the spread of u


def test_the_training_set_records_the_decision_and_fills_sigma():
    from heat_platform.data.training_set import BatchInput, build_training_set

    scenario = SCENARIOS["spot-heater"]  # no sigma column, no noise_sigma
    inputs = []
    for seed in (1, 2):
        frame = pl.DataFrame(simulate_batch(scenario, seed=seed).columns()).with_columns(
            pl.lit(None, dtype=pl.Float64).alias("sigma")).with_row_index("row", offset=1)
        inputs.append(BatchInput(f"b{seed}", f"v{seed}", frame.with_columns(
            pl.col("row").cast(pl.Int64))))
    built = build_training_set(inputs, scenario.spec, noise_sigma=scenario.spec.noise_sigma)
    assert built.noise["source"] == "estimated"
    assert built.train["sigma"].null_count() == 0
    assert built.train["sigma"][0] == pytest.approx(built.noise["estimate"])
    assert any("no noise level given" in warning for warning in built.warnings)
