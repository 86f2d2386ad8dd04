"""MLflow as a Dagster resource: the settings of :class:`~heat_platform.models.mlflow_store.MlflowStore`.

dagster-mlflow's ``mlflow_tracking`` resource is the legacy function style and starts a run per
Dagster run; the platform's runs are per model (one per training, one per classical fit), so the
resource here only carries where the store is and hands the library its plain class, and logs
reports (Data Docs, Evidently) so that the UI links to them over HTTP. dagster-mlflow's
``end_mlflow_on_run_finished`` hook ends an MLflow run left active when a Dagster run finishes
(see the README).
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from dagster._core.definitions.decorators.hook_decorator import event_list_hook
from pydantic import Field

from heat_platform.models.mlflow_store import MlflowStore


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, metrics, artifacts and registered models go."""

    tracking_uri: str = Field(description="MLflow tracking and registry URI (sqlite:///... by "
                              "default; MLFLOW_TRACKING_URI).")
    artifact_root: str = Field(description="Directory for run artifacts of new experiments.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="Base URL of the MLflow UI "
                        "in links shown by Dagster (`make dev` serves it).")

    def store(self) -> MlflowStore:
        return MlflowStore(self.tracking_uri, self.artifact_root, self.ui_url)

    def end_run(self, status: str = "FINISHED") -> None:
        """End the MLflow run still active in this process, if any, with ``status`` (what
        dagster-mlflow's hook calls when a step finishes)."""
        if "mlflow" not in sys.modules:  # nothing imported MLflow: no run can be active
            return
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)

    def report_links(self, context: dg.OpExecutionContext, experiment: str, name: str,
                     root: Path, files: list[Path], main: Path) -> dict[str, dg.MetadataValue]:
        """Log a report (``files`` under ``root``) to MLflow and return the links the Dagster
        UI shows for it: the MLflow UI page rendering ``main``, the file over HTTP from the
        MLflow server, and the local path (alone, with a warning, when MLflow cannot take it:
        the asset's verdict stands without its report)."""
        from heat_platform.models.tracking import log_report

        label = name.replace("_", " ")
        local = {f"{label} (file)": dg.MetadataValue.path(str(main))}
        store = self.store()
        try:
            logged = log_report(store, experiment, name, root, files, tags={
                "heat_platform.dagster_run_id": context.run_id,
                "heat_platform.partition": context.partition_key if context.has_partition_key
                else ""})
        except Exception as error:
            context.log.warning(f"{label} not logged to MLflow ({error}); local copy only")
            return local
        path = logged.path(main.relative_to(root))
        return {
            f"{label} (MLflow)": dg.MetadataValue.url(
                store.artifact_url(logged.experiment_id, logged.run_id, path)),
            f"{label} (HTTP)": dg.MetadataValue.url(store.artifact_download_url(logged.run_id,
                                                                                path)),
            **local,
        }


@event_list_hook(name="end_mlflow_on_run_finished", required_resource_keys={"mlflow"})
def end_mlflow_on_run_finished(context, event_list):
    """dagster-mlflow's ``end_mlflow_on_run_finished``, imported when it runs: a failed step
    ends the active MLflow run as FAILED, the job's last step ends it as FINISHED. (Importing
    dagster_mlflow imports MLflow, two seconds the code location would pay on every load.)"""
    from dagster_mlflow import end_mlflow_on_run_finished as hook

    return hook.decorated_fn(context, event_list)


def with_mlflow_hook(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every asset that uses MLflow, with :func:`end_mlflow_on_run_finished`."""
    return [asset.with_hooks({end_mlflow_on_run_finished})
            if "mlflow" in asset.required_resource_keys else asset for asset in assets]
