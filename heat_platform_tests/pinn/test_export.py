"""The serving artifact: same numbers as the live model, loads with torch alone, and
differentiable for the gate's residual checks."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from heat_platform.heat.heatinv import heatinv_observations, heatinv_scaling, heatinv_spec
from heat_platform.heat.metrics import uniform_points
from heat_platform.pinn.config import PINNConfig
from heat_platform.pinn.export import load_exported, read_metadata
from heat_platform.pinn.losses import pde_residual
from heat_platform.pinn.trainer import train_pinn

TINY = PINNConfig(
    hidden_u=16,
    depth_u=2,
    hidden_a=8,
    depth_a=1,
    adam_iterations=30,
    lbfgs_iterations=20,
    n_domain=200,
    log_every=10,
    threads=1,
    device="cpu",
)


@pytest.fixture(scope="module")
def spec():
    return heatinv_spec()


@pytest.fixture(scope="module", params=["float32", "float64"])
def exported(request, spec, tmp_path_factory):
    """A tiny trained model and its artifact, in each floating point type."""
    train = heatinv_observations(noise_seed=0)
    config = dataclasses.replace(TINY, dtype=request.param)
    trained = train_pinn(spec, train, heatinv_scaling(train, spec), config)
    path = trained.export(tmp_path_factory.mktemp(request.param) / "model.pt")
    return trained, path


@pytest.fixture(scope="module")
def points(spec):
    p = uniform_points(spec.domain.bounds(), 1001, seed=3)  # not the traced batch size
    return p["x"], p["y"], p["t"]


# The artifact computes tanh(z) as 2 sigmoid(2z) - 1 with the factors folded into the weights
# (heat_platform.pinn.export.sigmoid_form): the same function, rounded differently (|u| <= ~1).
SAME = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-13}}


@pytest.mark.slow  # trains a model
def test_the_artifact_gives_the_live_models_numbers(exported, points):
    trained, path = exported
    module = load_exported(path)
    same = SAME[trained.config.dtype]
    x, y, t = points
    u, a = trained.predict(x, y, t)
    out = module(torch.as_tensor(np.stack([x, y, t], axis=1))).double().numpy()
    np.testing.assert_allclose(out[:, 0], u, **same)
    np.testing.assert_allclose(out[:, 1], a, **same)
    a_only = module.diffusivity(torch.as_tensor(np.stack([x, y], axis=1))).double().numpy()
    np.testing.assert_allclose(a_only, trained.diffusivity(x, y), **same)
    u_only = module.temperature(torch.as_tensor(np.stack([x, y, t], axis=1))).double().numpy()
    np.testing.assert_allclose(u_only, u, **same)


@pytest.mark.slow  # trains a model
def test_the_artifact_evaluates_sigmoids_not_tanh(exported):
    _, path = exported
    module = load_exported(path)
    assert read_metadata(path)["tanh_as_sigmoid"] == 2  # the u- and the a-network
    for method in (module.forward, module.temperature, module.diffusivity):
        graph = str(method.inlined_graph)
        assert "aten::sigmoid" in graph and "aten::tanh" not in graph


@pytest.mark.slow  # trains a model
def test_the_artifact_knows_its_domain_and_metadata(exported, spec):
    trained, path = exported
    module = load_exported(path)
    bounds = module.domain_bounds.double().numpy()
    np.testing.assert_array_equal(bounds, [[-1, 1], [-1, 1], [0, 1]])
    inside = module.in_domain(
        torch.tensor([[0.0, 0.0, 0.5], [1.0, -1.0, 1.0], [1.5, 0, 0.5], [0.0, 0.0, -0.1]])
    )
    assert inside.tolist() == [True, True, False, False]
    metadata = read_metadata(path)
    assert metadata["spec_name"] == spec.name
    assert metadata["fingerprint"] == trained.fingerprint
    assert metadata["dtype"] == trained.config.dtype
    assert metadata["scaling"] == trained.scaling.to_dict()


@pytest.mark.slow  # trains a model
def test_gradients_flow_through_the_artifact(exported, spec, points):
    trained, path = exported
    module = load_exported(path)
    x, y, t = (v[:200] for v in points)
    live = pde_residual(trained.net, spec, x, y, t)
    loaded = pde_residual(module, spec, x, y, t)
    scale = np.sqrt(np.mean(live**2))
    np.testing.assert_allclose(loaded, live, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.slow  # trains a model
def test_the_artifact_loads_with_torch_alone(exported):
    trained, path = exported
    code = textwrap.dedent(f"""
        import json, sys, torch
        module = torch.jit.load({str(path)!r})
        ua = module(torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64))
        assert ua.dtype == torch.{trained.config.dtype}
        a = module.diffusivity(torch.tensor([[0.1, 0.2]]))
        loaded = [m for m in sys.modules if m.split(".")[0] in ("deepxde", "dagster", "heat_platform")]
        print(json.dumps({{"shape": list(ua.shape), "a": a.tolist(), "modules": loaded}}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 2] and report["a"][0] > 0
    assert report["modules"] == []
