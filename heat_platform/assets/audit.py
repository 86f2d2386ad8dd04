"""Stage 8, audit: what an auditor reads in the Dagster UI without asking anyone.

``audit_trail`` follows every champion move and deployment: it renders the current champion's
lineage (model artifact, MLflow run, gate decision, training set, raw files with their full
sha256 and what validation said of them) and the experiment's decision history as Markdown,
and checks the audit log's hash chain against the head recorded on the registered model; a
broken chain fails the (non-blocking) check, visibly, without stopping anything.
"""

import dagster as dg

from heat_platform.assets.partitions import experiments, partitioned_check
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage

AUDIT_LOG_INTACT = "audit_log_intact"
HISTORY_SHOWN = 50


@dg.asset(
    partitions_def=experiments,
    group_name="audit",
    kinds={"mlflow", "sqlite"},
    owners=["team:heat-platform"],
    deps=["champion_model", "deployed_bento"],
    check_specs=[partitioned_check(AUDIT_LOG_INTACT, "audit_trail",
                                   "The audit log's hash chain is unbroken and ends at the head "
                                   "recorded on the registered model.",
                                   partitions_def=experiments, blocking=False)],
    automation_condition=dg.AutomationCondition.eager(),
)
def audit_trail(context: dg.AssetExecutionContext, storage: PlatformStorage,
                mlflow: MlflowTracking):
    """The champion's lineage back to its raw files and the experiment's decision history."""
    from heat_platform.audit import report
    from heat_platform.audit.lineage import Reference, build_lineage
    from heat_platform.models.registry import ModelRegistry

    experiment = context.partition_key
    catalog = storage.catalog()
    registry = ModelRegistry(mlflow.store(), catalog)
    champion = registry.champion(experiment)
    lineage = None
    if champion is not None:
        lineage = build_lineage(Reference("model_version", f"{experiment}:{champion.version}",
                                          versions=((experiment, champion.version),)),
                                storage.paths, registry)
    check = registry.audit_log.verify(experiment)
    history = catalog.audit_trail(experiment, limit=HISTORY_SHOWN)
    chain = lineage.models[0] if lineage else None
    yield dg.MaterializeResult(metadata={
        "champion": f"{champion.model_name} v{champion.version}" if champion else "none",
        "audit log": "intact" if check.ok else "BROKEN",
        "audit entries": len(history),
        "raw files": len(chain.raw_files) if chain else 0,
        **({"mlflow run": dg.MetadataValue.url(chain.mlflow_run["url"]),
            "data_version": chain.training_set["data_version"]} if chain else {}),
        "trail": dg.MetadataValue.md(report.markdown(lineage, history, check)),
    })
    yield dg.AssetCheckResult(check_name=AUDIT_LOG_INTACT, passed=check.ok,
                              description="; ".join(check.problems) or str(check.chain.head),
                              metadata={"problems": len(check.problems)})
