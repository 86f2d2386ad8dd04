"""What is served is what was built: the bento's version covers its service code and packages,
and its packages are pinned like the platform's."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from heat_platform.paths import PROJECT_ROOT
from heat_platform.serving.bento import (
    ServedModel,
    pinned_packages,
    service_digest,
    service_source,
)
from heat_platform.serving.deploy import bento_version

MODEL = ServedModel(experiment="e", torchscript=Path("model.pt"), mlflow_model_name="heat-pinn-e",
                    mlflow_model_version="3", mlflow_run_id="0" * 32, data_version="d",
                    dagster_run_id="r", domain={"x": [0, 1], "y": [0, 1], "t": [0, 1]})


def test_a_change_to_the_service_code_is_a_new_bento(tmp_path, monkeypatch):
    same = bento_version([MODEL])
    assert bento_version([MODEL]) == same  # same champion, same code: the same bento
    copy = tmp_path / "heat_service"
    shutil.copytree(service_source(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("HEAT_PLATFORM_BENTO_SRC", str(copy))
    assert bento_version([MODEL]) == same  # a copy of the same code
    service = copy / "service.py"
    service.write_text(service.read_text() + "\n# a fix to the service\n")
    assert bento_version([MODEL]) != same  # ships without waiting for a new champion
    assert service_digest(copy) != service_digest(PROJECT_ROOT / "bentos" / "heat_service")


def test_the_packages_are_pinned_to_this_environment():
    pins = dict(pin.split("==") for pin in pinned_packages())
    assert set(pins) == {"torch", "numpy", "fastapi", "pydantic", "pydantic-settings"}
    assert all(pins[name] == version(name).split("+")[0] for name in pins)


@pytest.mark.server
def test_the_built_bento_carries_the_pins(deployed):
    bento = deployed.paths.bentoml_home / "bentos" / "heat_service" / deployed.bento.split(":")[1]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().split()
    # BentoML adds itself, pinned too
    assert sorted(requirements) == sorted([*pinned_packages(), f"bentoml=={version('bentoml')}"])
