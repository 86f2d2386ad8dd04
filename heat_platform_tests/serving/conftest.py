"""A platform with a deployed champion, built once per test module: ingest, a smoke PINN, the
gate (relaxed for a smoke model), the champion, and the real deployed_bento asset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from heat_platform.paths import PlatformPaths
from heat_platform.serving.server import BentoServer
from heat_platform_tests.assets.conftest import EXPERIMENT, RELAXED, TINY
from heat_platform_tests.conftest import SensorDriver, install_mlflow_store, materialize


@dataclass
class Deployed:
    paths: PlatformPaths
    resources: dict
    instance: object
    bento: str
    champion: object  # heat_platform.models.candidates.Champion
    result: object  # the deployed_bento run's ExecuteInProcessResult

    def start(self, **env: str) -> BentoServer:
        server = BentoServer.start(self.bento, bentoml_home=self.paths.bentoml_home,
                                   log_dir=self.paths.serving / "servers",
                                   env={"HEAT_SERVING_LOG_DIR": str(self.paths.serving / "log"),
                                        **env})
        try:
            server.wait_ready()
        except Exception:
            server.stop()
            raise
        return server


# The platform below is built once per test session, also when heat_platform_tests/faults/
# asks for it (its conftest imports this fixture, which pytest then defines a second time).
_BUILT: dict[str, Deployed] = {}


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[Deployed]:
    if "platform" in _BUILT:
        yield _BUILT["platform"]
        return
    yield from _deploy(tmp_path_factory, mlflow_template)


def _deploy(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[Deployed]:
    import dagster as dg

    from heat_platform.instance import prepare_instance
    from heat_platform.resources import build_resources, resolved
    from heat_platform.simulate import simulate_to_landing

    paths = PlatformPaths(tmp_path_factory.mktemp("deployed") / "platform").ensure()
    prepare_instance(paths)
    install_mlflow_store(paths, mlflow_template)
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        with pytest.MonkeyPatch.context() as patch:  # only while building it (see platform_paths)
            patch.setenv("HEAT_PLATFORM_HOME", str(paths.home))
            patch.setenv("DAGSTER_HOME", str(paths.dagster_home))
            patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}")
            resources = resolved(build_resources(paths))
            simulate_to_landing(paths.landing, EXPERIMENT, seed=1)
            SensorDriver(instance, resources).until_quiet()
            materialize(instance, resources, ["training_set", "classical_inversion"], EXPERIMENT)
            trained = materialize(
                instance, resources, ["pinn_model", "gate_report", "champion_model"], EXPERIMENT,
                run_config={"ops": {"pinn_model": {"config": TINY},
                                    "gate_report": {"config": RELAXED}}})
            result = materialize(instance, resources, ["deployed_bento"], EXPERIMENT)
        _BUILT["platform"] = Deployed(
            paths, resources, instance, result.output_for_node("deployed_bento")["bento"],
            trained.output_for_node("champion_model"), result)
        yield _BUILT["platform"]


@pytest.fixture(scope="module")
def server(deployed: Deployed) -> Iterator[BentoServer]:
    """`bentoml serve` of the deployed bento, every request sampled into the serving log."""
    with deployed.start(HEAT_SERVING_LOG_SAMPLE="1.0", HEAT_SERVING_MAX_POINTS="2000",
                          HEAT_SERVING_DIRECT_MAX_POINTS="100") as running:
        yield running


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive
