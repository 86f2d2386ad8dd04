"""Problem specs: the two example specs parse and round-trip; every rejection rule holds."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from heat_platform.heat.formula import FormulaError
from heat_platform.heat.spec import (
    KEYS,
    MAX_BYTES,
    Domain,
    ProblemSpec,
    SpecError,
    load_spec,
    parse_spec,
    spec_from_yaml,
)

# A synthetic benchmark (PINNacle HeatInv) ...
HEATINV_YAML = """\
name: pinnacle-heatinv
description: PINNacle HeatInv, a = 2 + sin(pi x) sin(pi y) recovered from noisy u.
domain: {x: [-1, 1], y: [-1, 1], t: [0, 1]}
source: "exp(-t) * ((4*pi**2 - 1)*sin(pi*x)*sin(pi*y) + pi**2*(2*sin(pi*x)**2*sin(pi*y)**2
  - cos(pi*x)**2*sin(pi*y)**2 - sin(pi*x)**2*cos(pi*y)**2))"
boundary_diffusivity: 2
diffusivity_truth: 2 + sin(pi*x)*sin(pi*y)
temperature_truth: exp(-t)*sin(pi*x)*sin(pi*y)
noise_sigma: 0.1
"""

# ... and what a lab drops into its landing zone: real sensors, so no truths; the other keys.
LAB_PLATE_YAML = """\
# Copper plate heated along one edge
name: lab_plate.2024-06
description: |
  Plate 0.2 m x 0.1 m, thermocouple grid, 10 minutes.
domain:
  x: [0, 0.2]
  y: [0, 0.1]
  t: [0, 600]
source: 0
boundary_temperature: 20 + 5*(1 - exp(-t/60)) * max(0, 1 - x/0.01)
initial_temperature: 20
boundary_diffusivity: 1.1e-4
noise_sigma: 0.05
temperature_range: [-10, 150]
diffusivity_range: [0, 1e-3]
"""


EXAMPLES = {"heatinv": HEATINV_YAML, "lab_plate": LAB_PLATE_YAML}


@pytest.fixture
def heatinv() -> ProblemSpec:
    return spec_from_yaml(HEATINV_YAML)


@pytest.fixture(params=EXAMPLES.values(), ids=EXAMPLES.keys())
def example(request: pytest.FixtureRequest) -> ProblemSpec:
    return spec_from_yaml(request.param)


def test_heatinv_spec_parses(heatinv: ProblemSpec) -> None:
    assert heatinv.name == "pinnacle-heatinv"
    assert heatinv.domain == Domain(x=(-1.0, 1.0), y=(-1.0, 1.0), t=(0.0, 1.0))
    assert heatinv.domain.bounds() == {"x": (-1.0, 1.0), "y": (-1.0, 1.0), "t": (0.0, 1.0)}
    assert heatinv.source.variables == {"x", "y", "t"}
    assert heatinv.boundary_diffusivity.text == "2"
    assert heatinv.noise_sigma == 0.1 and heatinv.temperature_range is None
    # u(0.5, 0.5, 0) = 1 and a(0.5, 0.5) = 3 for the manufactured solution.
    at = {"x": np.array([0.5]), "y": np.array([0.5]), "t": np.array([0.0])}
    assert heatinv.temperature_truth(**at) == pytest.approx(1.0)
    assert heatinv.diffusivity_truth(x=at["x"], y=at["y"]) == pytest.approx(3.0)


def test_lab_spec_parses(heatinv: ProblemSpec) -> None:
    spec = spec_from_yaml(LAB_PLATE_YAML)
    # Between them the two examples use every key, so the round trip below covers them all.
    assert set(spec.to_dict()) | set(heatinv.to_dict()) == set(KEYS)
    assert spec.description.startswith("Plate 0.2 m")
    assert spec.source.variables == frozenset() and spec.initial_temperature.text == "20"
    assert spec.boundary_diffusivity.text == "0.00011"  # yaml's float, written back by str()
    assert spec.diffusivity_range == (0.0, 1e-3)  # 1e-3 is a number here, not PyYAML's string
    assert spec.temperature_range == (-10.0, 150.0) and spec.diffusivity_range == (0.0, 1e-3)
    assert spec.boundary_temperature(x=0.0, y=0.05, t=0.0) == pytest.approx(20.0)


def test_round_trip_through_yaml(example: ProblemSpec) -> None:
    again = spec_from_yaml(example.to_yaml())
    assert again == example and again.sha256 == example.sha256
    assert parse_spec(example.to_dict()) == example
    assert pickle.loads(pickle.dumps(example)) == example


def test_sha256_ignores_layout_but_not_meaning(heatinv: ProblemSpec) -> None:
    data = heatinv.to_dict()
    shuffled = dict(reversed(list(data.items())))
    shuffled["diffusivity_truth"] = " 2+sin( pi*x ) * sin(pi * y)"
    assert parse_spec(shuffled).sha256 == heatinv.sha256
    assert parse_spec({**data, "noise_sigma": 0.2}).sha256 != heatinv.sha256
    assert parse_spec({**data, "source": "0"}).sha256 != heatinv.sha256
    assert len(heatinv.sha256) == 64


def test_domain_contains_the_closed_box(heatinv: ProblemSpec) -> None:
    x = np.array([-1.0, 1.0, 0.0, 1.0001, 0.0])
    t = np.array([0.0, 1.0, 0.5, 0.5, -0.1])
    assert heatinv.domain.contains(x, np.zeros(5), t).tolist() == [True, True, True, False, False]
    assert heatinv.domain.contains(0.0, 0.0, 0.0).item() is True


def rejected(data, key: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    return caught.value


def valid() -> dict:
    return {"name": "plate", "domain": {"x": [0, 1], "y": [0, 1], "t": [0, 1]}, "source": 0}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sorce": "x"}, "sorce"),
        ({"name": None}, "name"),
        ({"name": "../etc"}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": "plate\n"}, "name"),
        ({"name": 2024}, "name"),
        ({"description": ["a"]}, "description"),
        ({"domain": [0, 1]}, "domain"),
        ({"domain": {"x": [0, 1], "y": [0, 1]}}, "domain.t"),
        ({"domain": {"x": [0, 1], "y": [0, 1], "t": [0, 1], "z": [0, 1]}}, "domain.z"),
        ({"domain": {"x": [1, 0], "y": [0, 1], "t": [0, 1]}}, "domain.x"),
        ({"domain": {"x": [0, 0], "y": [0, 1], "t": [0, 1]}}, "domain.x"),
        ({"domain": {"x": [0, 1], "y": [0, float("inf")], "t": [0, 1]}}, "domain.y"),
        ({"domain": {"x": [0, 1], "y": [0, 1], "t": [0, float("nan")]}}, "domain.t"),
        ({"domain": {"x": [0, 1], "y": ["0", 1], "t": [0, 1]}}, "domain.y"),
        ({"domain": {"x": [0, 1, 2], "y": [0, 1], "t": [0, 1]}}, "domain.x"),
        ({"domain": {"x": [True, 2], "y": [0, 1], "t": [0, 1]}}, "domain.x"),
        ({"domain": {"x": [0, 10**400], "y": [0, 1], "t": [0, 1]}}, "domain.x"),
        ({"source": None}, "source"),
        ({"source": True}, "source"),
        ({"source": "sin(x"}, "source"),
        ({"diffusivity_truth": "2 + t"}, "diffusivity_truth"),
        ({"boundary_diffusivity": "exp(-t)"}, "boundary_diffusivity"),
        ({"initial_temperature": "sin(t)"}, "initial_temperature"),
        ({"noise_sigma": 0}, "noise_sigma"),
        ({"noise_sigma": -0.1}, "noise_sigma"),
        ({"noise_sigma": "0.1"}, "noise_sigma"),
        ({"temperature_range": [10, -10]}, "temperature_range"),
        ({"temperature_range": 10}, "temperature_range"),
        ({"diffusivity_range": [-1, 1]}, "diffusivity_range"),
        ({"diffusivity_range": [1, 1]}, "diffusivity_range"),
    ],
)
def test_rejects_bad_specs_naming_the_key(change: dict, key: str) -> None:
    rejected({**valid(), **change}, key)


def test_missing_required_keys_and_non_mappings() -> None:
    for key in ("name", "domain", "source"):
        data = valid()
        del data[key]
        assert "is required" in str(rejected(data, key))
    rejected(["name", "plate"], "problem.yaml")


def test_unknown_key_suggests_the_known_one() -> None:
    assert "did you mean 'source'" in str(rejected({**valid(), "sorce": 1}, "sorce"))


def test_formula_errors_keep_key_and_token() -> None:
    error = rejected({**valid(), "source": "__import__('os').system('ls')"}, "source")
    assert error.token == "__import__" and isinstance(error.__cause__, FormulaError)
    error = rejected({**valid(), "diffusivity_truth": "2 + sin(t)"}, "diffusivity_truth")
    assert error.token == "t"
    assert str(error).count("diffusivity_truth: ") == 1


def test_explicit_nulls_count_as_absent() -> None:
    assert parse_spec({**valid(), "boundary_temperature": None}).boundary_temperature is None


@pytest.mark.parametrize(
    "text",
    [
        "- just\n- a list\n",
        "plain text",
        "name: [unclosed",
        "name: a\nname: b\n",  # duplicate keys would silently keep the last one
        "!!python/object/apply:os.system ['ls']\n",
        "x: 1" + "0" * 5000 + "\n",  # Python refuses to convert integers this long
        "t: 2024-13-45\n",
        "a: " + "[" * 50 + "]" * 50 + "\n",
    ],
)
def test_bad_yaml_is_a_spec_error(text: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_yaml(text)
    assert caught.value.key == "problem.yaml"


def test_billion_laughs_is_refused_at_once() -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(levels) + "\nname: *a9\n"
    started = time.perf_counter()
    with pytest.raises(SpecError, match="aliases are not allowed"):
        spec_from_yaml(bomb)
    assert time.perf_counter() - started < 1.0


def test_files_are_size_limited(tmp_path: Path) -> None:
    path = tmp_path / "problem.yaml"
    path.write_text(HEATINV_YAML)
    assert load_spec(path) == spec_from_yaml(HEATINV_YAML)
    path.write_text(HEATINV_YAML + "#" * MAX_BYTES)
    with pytest.raises(SpecError, match="larger than"):
        load_spec(path)
    with pytest.raises(SpecError, match="larger than"):
        spec_from_yaml(HEATINV_YAML + "#" * MAX_BYTES)
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot be read"):
        load_spec(tmp_path / "missing.yaml")


def test_spec_errors_pickle() -> None:
    error = pickle.loads(pickle.dumps(SpecError("source", "bad", token="z")))
    assert (error.key, error.token, str(error)) == ("source", "z", "source: bad")
