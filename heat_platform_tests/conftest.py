"""Shared fixtures: every test gets its own platform home and its own Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DDE_BACKEND", "pytorch")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

from heat_platform.paths import PlatformPaths


@pytest.fixture
def platform_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformPaths:
    """A fresh platform home (landing zone, store, DAGSTER_HOME, MLflow, BentoML) under tmp_path."""
    paths = PlatformPaths(tmp_path / "platform").ensure()
    monkeypatch.setenv("HEAT_PLATFORM_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HEAT_PLATFORM_DB_URL", raising=False)
    return paths


@pytest.fixture
def dagster_instance(platform_paths: PlatformPaths) -> Iterator:
    """A real Dagster instance (SQLite storage) in the test's DAGSTER_HOME."""
    import dagster as dg

    from heat_platform.instance import prepare_instance

    prepare_instance(platform_paths)
    with dg.DagsterInstance.get() as instance:
        yield instance
