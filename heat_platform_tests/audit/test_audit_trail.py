"""The audit_trail asset: the champion's lineage and the decision history as Markdown in the
Dagster UI, and a check that turns red when the audit log was edited behind the platform.

The champion is a classical fit on a crude grid (seconds), promoted through the real registry.
"""

from __future__ import annotations

import sqlite3

import pytest

from heat_platform.data.catalog import Catalog
from heat_platform.models.registry import ModelRegistry
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import latest_materialization, materialize

EXPERIMENT = "inclusion"
CRUDE = {"ops": {"classical_inversion": {"config": {"grid": 2, "n_steps": 2}}}}
pytestmark = pytest.mark.slow  # fits a (crude) model


def test_the_audit_trail_shows_the_champion_back_to_its_raw_files_and_a_broken_chain(
        platform_paths, sensor, resources):
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=1)
    sensor.until_quiet()
    instance = sensor.instance
    fitted = materialize(instance, resources, ["training_set", "classical_inversion"],
                         EXPERIMENT, run_config=CRUDE)
    version = fitted.output_for_node("classical_inversion").version
    catalog = Catalog(platform_paths.catalog_url)
    registry = ModelRegistry(resources["mlflow"].store(), catalog)
    registry.promote(EXPERIMENT, version, actor="alice", reasons=["reviewed by hand"])

    result = materialize(instance, resources, ["audit_trail"], EXPERIMENT)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    metadata = latest_materialization(instance, "audit_trail", EXPERIMENT).metadata
    assert metadata["champion"].value == f"heat-model-{EXPERIMENT} v{version}"
    assert metadata["audit log"].value == "intact" and metadata["raw files"].value == 1
    trail = metadata["trail"].value
    raw = catalog.current_version(EXPERIMENT, "b001")
    assert f"### Champion heat-model-{EXPERIMENT} v{version} (classical)" in trail
    assert f"`{raw.sha256}`" in trail and raw.source_path in trail.replace("\\", "")
    assert f"`{registry.champion(EXPERIMENT).tags['sha256']}`" in trail  # the model artifact
    assert metadata["mlflow run"].value in trail
    assert "| promote | confirmed | alice |" in trail and "reviewed by hand" in trail

    # an entry rewritten by someone holding the database file: the next trail says so
    outside = sqlite3.connect(platform_paths.home / "platform.db", isolation_level=None)
    outside.execute("DROP TRIGGER audit_log_no_update")
    outside.execute("UPDATE audit_log SET actor = 'mallory' WHERE action = 'promote'")
    outside.close()
    result = materialize(instance, resources, ["audit_trail"], EXPERIMENT)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "hash" in check.description
    metadata = latest_materialization(instance, "audit_trail", EXPERIMENT).metadata
    assert metadata["audit log"].value == "BROKEN"
    assert "**Audit log check FAILED**" in metadata["trail"].value
