"""Stage 6, serving: the champions as one BentoML service, smoke-tested before anyone calls it.

``deployed_bento`` follows ``champion_model`` (a promotion, an approval or a rollback): it
builds a bento serving every experiment's champion, starts it on a loopback port, checks that
it is ready and answers exactly like the MLflow registry's model with the right lineage, then
publishes it for ``heat-platform serve`` (blue/green) and writes its Kubernetes manifest.
"""

import dagster as dg

from heat_platform.assets.partitions import experiments
from heat_platform.models.candidates import Champion
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage


@dg.asset(
    partitions_def=experiments,
    group_name="serving",
    kinds={"bentoml", "kubernetes"},
    owners=["team:heat-platform"],
    automation_condition=dg.AutomationCondition.eager(),
)
def deployed_bento(context: dg.AssetExecutionContext, champion_model: Champion,
                   storage: PlatformStorage, mlflow: MlflowTracking) -> dg.Output[dict]:
    """The bento serving the champions, smoke-tested and published for `heat-platform serve`."""
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.serving.deploy import SmokeTestFailed, deploy, served_model

    registry = ModelRegistry(mlflow.store(), storage.catalog())
    others = [registry.current_champion(name, storage.paths.store / "models")
              for name in storage.catalog().experiments() if name != champion_model.experiment]
    models = [served_model(c) for c in [champion_model, *others] if c is not None]
    try:
        deployment = deploy(storage.paths, models, check=models[0], registry=registry)
    except SmokeTestFailed as error:
        raise dg.Failure(description=f"the new bento was not published: {error}",
                         allow_retries=False) from error
    registry.record_deployment(champion_model.experiment, champion_model.version,
                               deployment.bento, actor="dagster", dagster_run_id=context.run_id)
    smoke = deployment.smoke
    return dg.Output(
        {"bento": deployment.bento, "experiments": [m.experiment for m in models],
         "manifest": str(deployment.manifest)},
        metadata={
            "bento": deployment.bento,
            "serves": dg.MetadataValue.md("\n".join(
                f"- {m.experiment}: {m.mlflow_model_name} v{m.mlflow_model_version} ({m.kind})"
                for m in models)),
            "champion version": champion_model.version,
            "endpoint": deployment.served_url or "start it with `heat-platform serve` "
                                                 "(rolls out this bento)",
            "smoke test: ready after s": smoke.ready_after_s,
            "smoke test: max |u - MLflow u|": smoke.max_abs_difference,
            "smoke test: 64-point POST p50 ms": smoke.latency_ms_p50,
            "kubernetes manifest": dg.MetadataValue.path(str(deployment.manifest)),
        },
        data_version=dg.DataVersion(deployment.bento),
    )
