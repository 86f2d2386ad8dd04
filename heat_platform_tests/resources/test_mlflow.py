"""What dagster-mlflow adds: its end_mlflow_on_run_finished hook, on every asset that uses MLflow,
ends an MLflow run a step left active with the Dagster run's outcome (FAILED when a step fails,
FINISHED after the job's last step). The platform's own runs end inside their `with` block; this
is the net under code that does not."""

from __future__ import annotations

import dagster as dg
import mlflow
import pytest

from heat_platform.definitions import defs
from heat_platform.resources.mlflow import MlflowTracking, with_mlflow_hook


def test_every_asset_that_uses_mlflow_carries_the_hook() -> None:
    hooked = {key.to_user_string() for asset in defs.assets for key in asset.keys
              if {h.name for h in asset.hook_defs} == {"end_mlflow_on_run_finished"}}
    users = {key.to_user_string() for asset in defs.assets for key in asset.keys
             if "mlflow" in asset.required_resource_keys}
    assert hooked == users and {"pinn_model", "classical_inversion", "gate_report"} <= users


@pytest.mark.parametrize("fails", [False, True])
def test_the_hook_ends_a_run_left_active_with_the_dagster_run_outcome(resources, fails) -> None:
    tracking: MlflowTracking = resources["mlflow"]
    started = []

    @dg.asset
    def careless(mlflow: MlflowTracking) -> None:
        store = mlflow.store()
        run = store.mlflow().start_run(experiment_id=store.experiment_id("plate"))
        started.append(run.info.run_id)  # and never ended
        if fails:
            raise RuntimeError("the step failed with its MLflow run open")

    (hooked,) = with_mlflow_hook([careless])
    result = dg.materialize([hooked], resources={"mlflow": tracking}, raise_on_error=False)
    assert result.success is not fails
    (run_id,) = started
    assert mlflow.active_run() is None
    status = tracking.store().client().get_run(run_id).info.status
    assert status == ("FAILED" if fails else "FINISHED")
