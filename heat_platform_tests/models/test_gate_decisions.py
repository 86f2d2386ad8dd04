"""The gate's decision rule, on hand-made scores: every threshold, the champion comparison,
approval mode. (The asset-level tests in assets/test_gate.py run it on trained models.)"""

import dataclasses

import pytest

from heat_platform.heat.synthetic import SCENARIOS
from heat_platform.models.gate import Thresholds, decide
from heat_platform.models.scoring import Scores

GOOD = Scores(validation_rmse=0.011, noise_sigma=0.01, rmse_to_noise=1.1, residual_rms=0.5,
              residual_max=2.0, residual_relative=0.06, boundary_violation=0.0, a_min=0.9,
              a_max=2.0, a_finite=True, rel_l2_a=0.1)


@pytest.fixture(scope="module")
def spec():
    return SCENARIOS["inclusion"].spec


def judge(spec, candidate, champion=None, **thresholds):
    return decide("inclusion", "2", candidate, "1" if champion else None, champion, spec,
                  Thresholds(**thresholds))


def test_a_sound_first_model_is_promoted(spec):
    decision = judge(spec, GOOD)
    assert decision.promoted and decision.reasons == ["every threshold holds", "no champion yet"]
    assert decision.scores["candidate"]["rmse_to_noise"] == 1.1


@pytest.mark.parametrize(("change", "reason"), [
    ({"rmse_to_noise": 2.5}, "2.50 x the noise level"),
    ({"rmse_to_noise": float("nan")}, "x the noise level"),
    ({"residual_relative": 0.3}, "relative PDE residual 0.3"),
    ({"boundary_violation": 0.05}, "boundary diffusivity violated"),
    ({"a_min": -0.1}, "outside the physical range"),
    ({"a_finite": False}, "not finite"),
])
def test_each_threshold_rejects_on_its_own(spec, change, reason):
    decision = judge(spec, dataclasses.replace(GOOD, **change))
    assert decision.decision == "reject"
    assert len(decision.reasons) == 1 and reason in decision.reasons[0]


def test_thresholds_are_configurable(spec):
    assert judge(spec, dataclasses.replace(GOOD, rmse_to_noise=2.5), max_rmse_to_noise=3).promoted


def test_a_challenger_must_beat_the_champion_by_the_margin(spec):
    better = dataclasses.replace(GOOD, validation_rmse=0.010)
    assert judge(spec, better, champion=GOOD).promoted  # 9 % better
    assert "9.1% better than champion v1" in judge(spec, better, champion=GOOD).reasons[1]
    slightly = dataclasses.replace(GOOD, validation_rmse=0.0109)  # 0.9 % better
    decision = judge(spec, slightly, champion=GOOD)
    assert decision.decision == "reject" and "needs more than 2%" in decision.reasons[0]
    assert judge(spec, GOOD, champion=GOOD).decision == "reject"  # equal is not better


def test_better_data_fit_with_worse_physics_is_a_regression(spec):
    overfit = dataclasses.replace(GOOD, validation_rmse=0.009, residual_relative=0.12)
    decision = judge(spec, overfit, champion=GOOD)
    assert decision.decision == "reject"
    assert decision.reasons == ["physics regression: relative residual 0.12 vs champion v1's 0.06"]
    # within the tolerance it passes
    assert judge(spec, dataclasses.replace(overfit, residual_relative=0.075), champion=GOOD).promoted


def test_approval_mode_leaves_a_passing_model_pending(spec):
    decision = judge(spec, GOOD, require_approval=True)
    assert decision.decision == "pending" and not decision.promoted
    assert decision.reasons[-1] == "waiting for approval (require_approval)"
    assert judge(spec, dataclasses.replace(GOOD, rmse_to_noise=9),
                 require_approval=True).decision == "reject"
