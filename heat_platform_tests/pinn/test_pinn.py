"""Training the PINN on tiny problems: it learns, it is reproducible, it resumes, it stops
when it diverges. Tiny networks and one thread keep each test to a few seconds."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from heat_platform.heat.observations import Observations
from heat_platform.heat.scaling import Scaling
from heat_platform.heat.spec import parse_spec
from heat_platform.pinn.config import PROFILES, PINNConfig
from heat_platform.pinn.losses import floored_misfit
from heat_platform.pinn.trainer import TrainingDiverged, member_seed, train_pinn

A_TRUE = 1.5

# Manufactured solution with a constant diffusivity 1.5 on [0, 1]^2 x [0, 1]:
# u = exp(-t) sin(pi x) sin(pi y) gives u_t - 1.5 lap(u) = (3 pi^2 - 1) u.
CONSTANT_A = {
    "name": "constant-a",
    "domain": {"x": [0, 1], "y": [0, 1], "t": [0, 1]},
    "source": "(3*pi^2 - 1) * exp(-t) * sin(pi*x) * sin(pi*y)",
    "diffusivity_truth": "1.5",
    "temperature_truth": "exp(-t) * sin(pi*x) * sin(pi*y)",
    "diffusivity_range": [0.1, 10],
}

TINY = PINNConfig(
    hidden_u=16,
    depth_u=2,
    hidden_a=8,
    depth_a=1,
    adam_iterations=40,
    adam_lr=3e-3,
    lbfgs_iterations=30,
    n_domain=150,
    resample_every=20,
    checkpoint_every=20,
    log_every=10,
    threads=1,
    device="cpu",
)


def observations(spec, n: int, seed: int, sigma: float | None = 0.01) -> Observations:
    rng = np.random.default_rng(seed)
    x, y, t = rng.uniform(0, 1, (3, n))
    u = spec.temperature_truth(x=x, y=y, t=t)
    if sigma is not None:
        u = u + sigma * rng.standard_normal(n)
    return Observations(x=x, y=y, t=t, u=u, sigma=sigma)


@pytest.fixture(scope="module")
def problem():
    spec = parse_spec(CONSTANT_A)
    train = observations(spec, 300, seed=0)
    return spec, train, Scaling.fit(spec.domain.bounds(), train.u)


def without_wall_time(history):
    return [{k: v for k, v in entry.items() if k != "wall_time_s"} for entry in history]


@pytest.mark.slow  # trains a model
def test_training_lowers_the_loss_and_recovers_a_constant_diffusivity(problem):
    spec, train, scaling = problem
    config = dataclasses.replace(
        TINY,
        adam_iterations=100,
        lbfgs_iterations=100,
        n_domain=200,
        resample_every=50,
        log_every=20,
    )
    validation = observations(spec, 200, seed=1, sigma=None)
    trained = train_pinn(spec, train, scaling, config, validation=validation)

    first, last = trained.history[0], trained.history[-1]
    assert last["loss"] < 0.05 * first["loss"]
    assert last["val_rmse"] < 0.5 * first["val_rmse"]
    assert trained.iterations == last["step"] and last["phase"] == 1.0
    x, y = np.meshgrid(np.linspace(0.1, 0.9, 9), np.linspace(0.1, 0.9, 9))
    a = trained.diffusivity(x, y)
    assert np.all(a > 0)
    assert np.sqrt(np.mean((a - A_TRUE) ** 2)) < 0.1 * A_TRUE
    u, a_again = trained.predict(x, y, 0.5)
    np.testing.assert_allclose(a_again, a, rtol=1e-6)
    u_true = spec.temperature_truth(x=x, y=y, t=0.5)
    assert np.sqrt(np.mean((u - u_true) ** 2)) < 0.05


@pytest.mark.slow  # trains a model
def test_same_seed_same_history_other_seed_other_history(problem):
    spec, train, scaling = problem
    one = train_pinn(spec, train, scaling, TINY)
    two = train_pinn(spec, train, scaling, TINY)
    assert without_wall_time(one.history) == without_wall_time(two.history)
    np.testing.assert_array_equal(one.predict(0.3, 0.6, 0.2)[1], two.predict(0.3, 0.6, 0.2)[1])
    three = train_pinn(spec, train, scaling, dataclasses.replace(TINY, seed=1))
    assert without_wall_time(three.history) != without_wall_time(one.history)


class Interrupt(Exception):
    pass


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("stop_at", [30, 60], ids=["during-adam", "during-lbfgs"])
def test_an_interrupted_training_resumes_from_its_checkpoint(problem, tmp_path, stop_at):
    spec, train, scaling = problem
    uninterrupted = train_pinn(spec, train, scaling, TINY)

    def crash(step, metrics):
        if step >= stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_pinn(spec, train, scaling, TINY, log=crash, checkpoint_dir=tmp_path)
    assert len(list(tmp_path.glob("pinn-*.pt"))) == 1

    logged = []
    resumed = train_pinn(
        spec,
        train,
        scaling,
        TINY,
        checkpoint_dir=tmp_path,
        log=lambda step, metrics: logged.append(step),
    )
    # it continued from the checkpoint (L-BFGS steps may carry it a little past stop_at)
    assert 0 < resumed.resumed_from_step < uninterrupted.iterations
    assert logged[0] > resumed.resumed_from_step and uninterrupted.resumed_from_step == 0
    assert resumed.iterations == uninterrupted.iterations
    assert without_wall_time(resumed.history) == without_wall_time(uninterrupted.history)
    points = (np.linspace(0, 1, 7), np.linspace(1, 0, 7), 0.4)
    np.testing.assert_array_equal(resumed.predict(*points)[0], uninterrupted.predict(*points)[0])

    logged.clear()  # a finished run is not trained again
    again = train_pinn(
        spec,
        train,
        scaling,
        TINY,
        checkpoint_dir=tmp_path,
        log=lambda step, metrics: logged.append(step),
    )
    assert logged == [] and again.history == resumed.history


PAIR = dataclasses.replace(TINY, ensemble=2)


@pytest.fixture(scope="module")
def pair(problem):
    """An ensemble of two, with what it logged."""
    spec, train, scaling = problem
    logged = []
    trained = train_pinn(spec, train, scaling, PAIR, log=lambda step, m: logged.append((step, m)))
    return trained, logged


@pytest.mark.slow  # trains a model
def test_an_ensemble_is_its_members_merged_into_one_network(problem, pair):
    spec, train, scaling = problem
    ensemble, logged = pair
    # member 0 is the plain training of the seed, member 1 the plain training of its own seed
    plain = train_pinn(spec, train, scaling, TINY)
    second = train_pinn(spec, train, scaling, dataclasses.replace(TINY, seed=member_seed(0, 1)))
    assert member_seed(0, 1) not in (0, member_seed(1, 1), member_seed(0, 2))
    members = [entry["member"] for entry in ensemble.history]
    assert members == [0] * len(plain.history) + [1] * len(second.history)
    of_members = [{k: v for k, v in entry.items() if k != "member"} for entry in ensemble.history]
    assert without_wall_time(of_members) == without_wall_time(plain.history + second.history)
    assert ensemble.iterations == plain.iterations + second.iterations
    assert {name.partition("/")[0] for _, metrics in logged for name in metrics} == {
        "member0", "member1"}
    # one network: u is the members' mean, a their geometric mean, at any point
    rng = np.random.default_rng(3)
    x, y, t = rng.uniform(0, 1, (3, 40))
    (u0, a0), (u1, a1) = plain.predict(x, y, t), second.predict(x, y, t)
    u, a = ensemble.predict(x, y, t)
    assert np.max(np.abs(u0 - u1)) > 1e-3 and np.max(np.abs(a0 - a1)) > 1e-3  # they differ
    np.testing.assert_allclose(u, (u0 + u1) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, np.sqrt(a0 * a1), rtol=1e-5)
    assert len(list(ensemble.net.parameters())) == len(list(plain.net.parameters()))
    np.testing.assert_allclose(ensemble.diffusivity_spread(x, y), np.abs(a0 - a1) / 2, rtol=1e-4)
    assert plain.diffusivity_spread(x, y) is None and plain.members == ()


@pytest.mark.slow  # trains a model
def test_an_interrupted_ensemble_resumes_each_member_from_its_checkpoint(problem, pair, tmp_path):
    spec, train, scaling = problem
    uninterrupted, _ = pair

    def crash(step, metrics):
        if "member1/loss" in metrics and step >= 30:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_pinn(spec, train, scaling, PAIR, log=crash, checkpoint_dir=tmp_path)
    logged = []
    resumed = train_pinn(spec, train, scaling, PAIR, checkpoint_dir=tmp_path,
                         log=lambda step, metrics: logged.append((step, *metrics)))
    # member 0 had finished and is not trained again; member 1 goes on from its checkpoint
    assert {name.partition("/")[0] for _, *names in logged for name in names} == {"member1"}
    first_done = max(e["step"] for e in uninterrupted.history if e["member"] == 0)
    assert first_done < resumed.resumed_from_step < first_done + logged[0][0]
    assert without_wall_time(resumed.history) == without_wall_time(uninterrupted.history)
    points = (np.linspace(0, 1, 7), np.linspace(1, 0, 7), 0.4)
    np.testing.assert_array_equal(resumed.predict(*points)[0], uninterrupted.predict(*points)[0])


@pytest.mark.slow  # trains a model
def test_a_checkpoint_never_resumes_a_different_training(problem, tmp_path):
    spec, train, scaling = problem
    short = dataclasses.replace(TINY, lbfgs_iterations=0)
    train_pinn(spec, train, scaling, short, checkpoint_dir=tmp_path)
    logged = []
    other = dataclasses.replace(short, weight_pde=2.0)
    train_pinn(
        spec,
        train,
        scaling,
        other,
        checkpoint_dir=tmp_path,
        log=lambda step, metrics: logged.append(step),
    )
    assert logged[0] == TINY.log_every  # from scratch
    more_data = observations(spec, 301, seed=0)
    logged.clear()
    train_pinn(
        spec,
        more_data,
        scaling,
        short,
        checkpoint_dir=tmp_path,
        log=lambda step, metrics: logged.append(step),
    )
    assert logged[0] == TINY.log_every
    assert len(list(tmp_path.glob("pinn-*.pt"))) == 3


@pytest.mark.slow  # trains a model
def test_a_diverging_training_stops_early_with_its_loss_terms(problem):
    spec, train, scaling = problem
    config = dataclasses.replace(TINY, adam_lr=1e12, adam_iterations=500)
    with pytest.raises(TrainingDiverged, match="loss_pde") as caught:
        train_pinn(spec, train, scaling, config)
    assert caught.value.step < 500


@pytest.mark.slow  # trains a model
def test_hard_boundary_diffusivity_float64_and_global_state(problem):
    _, train, scaling = problem
    with_boundary = parse_spec({**CONSTANT_A, "boundary_diffusivity": "1 + x*y"})
    config = dataclasses.replace(TINY, dtype="float64", adam_iterations=20, lbfgs_iterations=0)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    trained = train_pinn(with_boundary, train, scaling, config)
    assert torch.get_default_dtype() == dtype and torch.get_num_threads() == threads
    assert next(trained.net.parameters()).dtype == torch.float64
    s = np.linspace(0, 1, 11)
    edges_x = np.concatenate([s, s, np.zeros(11), np.ones(11)])
    edges_y = np.concatenate([np.zeros(11), np.ones(11), s, s])
    np.testing.assert_allclose(
        trained.diffusivity(edges_x, edges_y), 1 + edges_x * edges_y, rtol=1e-12
    )


@pytest.mark.slow  # trains a model
def test_a_frozen_for_its_first_steps_stays_at_its_start_then_trains(problem):
    _, train, scaling = problem
    with_boundary = parse_spec({**CONSTANT_A, "boundary_diffusivity": "1 + x*y"})
    x, y = np.meshgrid(np.linspace(0.1, 0.9, 5), np.linspace(0.1, 0.9, 5))
    frozen = dataclasses.replace(TINY, freeze_a_steps=TINY.adam_iterations, lbfgs_iterations=0)
    # a starts at its prior, a_b everywhere, and Adam leaves it there ...
    adam = train_pinn(with_boundary, train, scaling, frozen)
    np.testing.assert_allclose(adam.diffusivity(x, y), 1 + x * y, rtol=1e-6)
    assert adam.history[-1]["loss"] < adam.history[0]["loss"]  # u trained meanwhile
    # ... also into L-BFGS when asked (its steps advance in chunks of log_every) ...
    longer = dataclasses.replace(frozen, lbfgs_iterations=30, freeze_a_steps=70)
    np.testing.assert_allclose(
        train_pinn(with_boundary, train, scaling, longer).diffusivity(x, y), 1 + x * y, rtol=1e-6
    )
    # ... which it does not without the freeze, nor in L-BFGS after it
    for config in (dataclasses.replace(frozen, freeze_a_steps=0),
                   dataclasses.replace(frozen, lbfgs_iterations=30)):
        moved = train_pinn(with_boundary, train, scaling, config).diffusivity(x, y)
        assert np.max(np.abs(moved - (1 + x * y))) > 1e-3


@pytest.mark.slow  # trains a model
def test_a_warm_started_from_the_classical_inversion(problem):
    from heat_platform.heat.inversion import invert_spec

    spec, train, scaling = problem  # no boundary a: a starts at a_ref = 1 without warm start
    config = dataclasses.replace(TINY, warm_start_a=True, adam_iterations=0, lbfgs_iterations=0)
    trained = train_pinn(spec, train, scaling, config)
    x, y = np.meshgrid(np.linspace(0, 1, 13), np.linspace(0, 1, 13))
    classical = invert_spec(spec, train).diffusivity(x, y)
    assert np.sqrt(np.mean((classical - A_TRUE) ** 2)) < 0.1
    assert np.sqrt(np.mean((trained.diffusivity(x, y) - classical) ** 2)) < 0.02
    assert trained.warm_start["fit_rmse"] < 0.02 and trained.warm_start["classical_weight"] > 0


def test_the_floored_misfit_is_the_misfit_above_the_floor_and_flat_below_it():
    misfit = torch.tensor([0.2, 0.9, 0.97, 1.0, 1.03, 1.1, 3.0], requires_grad=True)
    floored = floored_misfit(misfit, 1.0)
    (slope,) = torch.autograd.grad(floored.sum(), misfit)
    np.testing.assert_allclose(floored.detach()[[0, 1, -2, -1]], [1.0, 1.0, 1.1, 3.0], atol=1e-4)
    np.testing.assert_allclose(slope[[0, 1, -2, -1]], [0.0, 0.0, 1.0, 1.0], atol=1e-4)
    assert torch.all(torch.diff(slope) >= 0)
    assert 0.4 < slope[3] < 0.6  # half the data term's weight at the floor itself


@pytest.mark.slow  # trains a model
def test_a_misfit_floor_stops_u_fitting_closer_and_gives_the_pde_the_difference(problem):
    spec, train, scaling = problem
    config = dataclasses.replace(TINY, adam_iterations=100, lbfgs_iterations=100, log_every=20)
    free = train_pinn(spec, train, scaling, config).history[-1]
    floor = 4 * free["loss_data"]  # a floor the training without one goes well below
    floored = train_pinn(
        spec, train, scaling, dataclasses.replace(config, misfit_floor=floor)
    ).history[-1]
    # the logged data loss is the misfit itself, held near the floor instead of below it ...
    assert floor - 0.1 < floored["loss_data"] < 1.2 * floor
    # ... and the loss the floor no longer pays for the data goes to the PDE residual
    assert floored["loss_pde"] < free["loss_pde"]
    no_sigma = dataclasses.replace(train, sigma=None)
    with pytest.raises(ValueError, match="noise level"):
        train_pinn(spec, no_sigma, scaling, dataclasses.replace(config, misfit_floor=1.0))


@pytest.mark.slow  # trains a model
def test_soft_boundary_diffusivity_adds_a_loss_term(problem):
    _, train, scaling = problem
    with_boundary = parse_spec({**CONSTANT_A, "boundary_diffusivity": "1.5"})
    config = dataclasses.replace(TINY, hard_boundary_a=False, lbfgs_iterations=0)
    trained = train_pinn(with_boundary, train, scaling, config)
    assert "loss_boundary_a" in trained.history[-1]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="n_domain"):
        train_pinn(None, None, None, dataclasses.replace(TINY, n_domain=0))
    with pytest.raises(ValueError, match="dtype"):
        PINNConfig(dtype="float16").check()
    with pytest.raises(ValueError, match="misfit_floor"):
        PINNConfig(misfit_floor=-1.0).check()
    with pytest.raises(ValueError, match="ensemble"):
        PINNConfig(ensemble=0).check()
    with pytest.raises(ValueError, match="length"):
        Observations(x=[0, 1], y=[0], t=[0], u=[0])
    with pytest.raises(ValueError, match="sigma"):
        Observations(x=[0], y=[0], t=[0], u=[0], sigma=0)
    for profile in (PINNConfig.profile(name) for name in PROFILES):
        assert profile.check() is profile


def test_importing_the_light_modules_does_not_import_deepxde():
    # DeepXDE takes seconds to import: only the training modules (backend, network, problem,
    # trainer) may import it, never the config, the losses, the export or the domain package.
    code = (
        "import sys, heat_platform.pinn.config, heat_platform.pinn.losses, "
        "heat_platform.pinn.export, heat_platform.heat.heatinv, heat_platform.heat.inversion; "
        "sys.exit('deepxde' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
