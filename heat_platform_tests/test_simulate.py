"""Synthetic experiments land like a lab's; a changed material carries its own truth."""

from __future__ import annotations

import polars as pl

from heat_platform.heat.spec import load_spec
from heat_platform.heat.synthetic import SCENARIOS
from heat_platform.simulate import simulate_to_landing


def test_a_material_shift_rewrites_the_truth_of_the_problem(tmp_path):
    landing = tmp_path / "landing"
    simulate_to_landing(landing, "inclusion", seed=1)
    problem = landing / "inclusion" / "problem.yaml"
    base = load_spec(problem)
    assert base.diffusivity_truth.text == SCENARIOS["inclusion"].spec.diffusivity_truth.text

    simulate_to_landing(landing, "inclusion", seed=3, shift="material")
    shifted = load_spec(problem)
    assert shifted.diffusivity_truth.text == SCENARIOS["inclusion"].shifts["material"].diffusivity
    assert "after the shift 'material'" in shifted.description
    # everything the platform validates against is unchanged
    assert (shifted.domain, shifted.source.text, shifted.temperature_range) == \
        (base.domain, base.source.text, base.temperature_range)

    # more batches of either world keep the shifted truth (the specimen changed)
    simulate_to_landing(landing, "inclusion", seed=4, shift="material")
    simulate_to_landing(landing, "inclusion", seed=1)
    assert load_spec(problem).sha256 == shifted.sha256
    # a miscalibration changes the sensors, not the material
    simulate_to_landing(landing, "inclusion", seed=5, shift="miscalibration")
    assert load_spec(problem).sha256 == shifted.sha256


def test_a_scenario_without_a_sigma_column_lands_without_one(tmp_path):
    batch = simulate_to_landing(tmp_path, "boundary-formula", seed=1)
    assert "sigma" not in pl.read_parquet(batch).columns
    assert load_spec(tmp_path / "boundary-formula" / "problem.yaml").noise_sigma is None
