"""The code location loads, and the instance it runs on can be created from nothing."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from heat_platform.definitions import defs


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"problem_spec", "raw_measurements", "validated_measurements",
            "quarantined_measurements", "training_set"} <= keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {("raw_measurements", "readable"),
            ("validated_measurements", "quarantine_share_within_limit"),
            ("validated_measurements", "great_expectations_contract")} <= checks
    for name in ("landing_zone_sensor", "automation"):
        assert defs.resolve_sensor_def(name) is not None
    for name in ("ingest_problem_spec", "ingest_batch"):
        assert defs.resolve_job_def(name) is not None


def test_loading_the_code_location_imports_no_heavy_library() -> None:
    """Run workers and the webserver import the definitions; torch, GX, DeepXDE, MLflow,
    Evidently and BentoML are imported inside the functions that need them."""
    code = ("import sys, heat_platform.definitions; "
            "print(sorted(m for m in ('torch', 'great_expectations', 'deepxde', 'mlflow', "
            "'evidently', 'bentoml') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_init_creates_the_instance_idempotently(platform_paths) -> None:
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "heat_platform.cli", "--home", str(platform_paths.home), "init"],
            capture_output=True, text=True, check=True,
        )
    assert str(platform_paths.dagster_home) in done.stdout
    assert (platform_paths.dagster_home / "dagster.yaml").read_text().startswith("# Dagster")
    with dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        assert instance.run_coordinator is not None


def test_dagster_cli_validates_the_code_location(platform_paths) -> None:
    from pathlib import Path

    from heat_platform.paths import PROJECT_ROOT

    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
         "-w", str(PROJECT_ROOT / "workspace.yaml")],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
