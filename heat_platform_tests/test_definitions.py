"""The code location loads, and the instance it runs on can be created from nothing."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from heat_platform.definitions import defs


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


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
