"""Fixtures of the asset tests: an experiment with validated data, and a tiny PINN config."""

import pytest

from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import materialize

EXPERIMENT = "inclusion"
# Trains in seconds on 2 cores; what a model learns is judged in bench/pinn_accuracy.py.
TINY = {"profile": "smoke", "threads": 2}
# Gate thresholds a coarse test model passes (the thresholds themselves are tested on
# hand-made scores in models/test_gate_decisions.py).
RELAXED = {"max_rmse_to_noise": 1e3, "max_residual_relative": 1e3}


@pytest.fixture
def ingested(platform_paths, sensor, resources):
    """One validated batch of the inclusion experiment and its training set; the instance."""
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=1)
    sensor.until_quiet()
    materialize(sensor.instance, resources, ["training_set"], EXPERIMENT)
    return sensor.instance
