"""Stage 5, the gate: only physically consistent models that beat the champion reach users.

``classical_inversion`` solves the same inverse problem classically (the honest baseline);
``gate_report`` scores the PINN candidate, the current champion and the classical inversion
side by side on the held-out sensors and a fresh collocation set and decides; a blocking check
stops anything downstream unless the candidate is promoted. ``champion_model`` is the only
place the ``champion`` alias moves: after the gate, after an approval (``heat-platform
approve``) or on a rollback (``heat-platform rollback``), each decision audit-logged.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from heat_platform.assets.configs import derived_config, library_values
from heat_platform.assets.partitions import experiments, partitioned_check
from heat_platform.data.ingest import StoredTrainingSet, current_spec
from heat_platform.models.candidates import Champion, ModelCandidate
from heat_platform.models.figures import markdown_image
from heat_platform.models.gate import GateDecision, Thresholds
from heat_platform.names import ESCALATION, TRIGGER
from heat_platform.pinn.config import STRONGER
from heat_platform.resources.alerts import AlertWebhook
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings

PROMOTED = "candidate_promoted"


class ClassicalConfig(dg.Config):
    penalty: Literal["laplacian", "gradient"] = Field(
        default="laplacian", description="Tikhonov seminorm of a (its weight: discrepancy principle).")
    grid: int = Field(default=31, description="Finite-volume cells per side.")
    n_steps: int = Field(default=50, description="Crank-Nicolson time steps.")


@dg.asset(
    partitions_def=experiments,
    group_name="gate",
    kinds={"scipy", "mlflow"},
    owners=["team:heat-platform"],
    automation_condition=dg.AutomationCondition.on_missing(),
)
def classical_inversion(context: dg.AssetExecutionContext, config: ClassicalConfig,
                        training_set: StoredTrainingSet, storage: PlatformStorage,
                        mlflow: MlflowTracking) -> dg.Output[ModelCandidate]:
    """a(x, y) by finite volumes + exact adjoint + Tikhonov + L-BFGS-B, on the same training set."""
    from heat_platform.models.classical import fit_classical

    _, spec = current_spec(storage.catalog(), training_set.experiment)
    outcome = fit_classical(mlflow.store(), training_set, spec, penalty=config.penalty, nx=config.grid,
                            ny=config.grid, n_steps=config.n_steps,
                            models_dir=storage.paths.store / "models",
                            dagster_run_id=context.run_id)
    scores = outcome.scores
    return dg.Output(outcome.candidate, metadata={
        "mlflow run": dg.MetadataValue.url(outcome.run_url),
        "validation RMSE": scores.validation_rmse,
        "registered model": f"{outcome.candidate.model_name} v{outcome.candidate.version}",
        "RMSE / noise": scores.rmse_to_noise,
        "relative PDE residual (finite differences)": scores.residual_relative,
        "Tikhonov weight": outcome.weight,
        "chi2 per observation": outcome.chi2_per_observation,
        **({"relL2(a) vs truth": scores.rel_l2_a} if scores.rel_l2_a is not None else {}),
        "seconds": round(outcome.wall_time_s, 2),
        "a(x, y)": dg.MetadataValue.md(markdown_image(outcome.png, "classical a(x, y)")),
    })


class _Thresholds(dg.Config):
    def thresholds(self) -> Thresholds:
        return Thresholds(**library_values(self, Thresholds))


# The gate's thresholds (heat_platform.models.gate.Thresholds); require_approval defaults to
# $HEAT_PLATFORM_REQUIRE_APPROVAL. a's physical range comes from the problem.yaml.
GateConfig = derived_config(
    "GateConfig", Thresholds, base=_Thresholds, exclude=("diffusivity_range",),
    defaults={"require_approval": PlatformSettings.load().require_approval},
    doc="Thresholds a candidate must meet (heat_platform.models.gate.Thresholds).")


@dg.asset(
    partitions_def=experiments,
    group_name="gate",
    kinds={"mlflow"},
    owners=["team:heat-platform"],
    check_specs=[partitioned_check(PROMOTED, "gate_report",
                                   "The candidate was promoted (not rejected, not pending).",
                                   partitions_def=experiments)],
    # judge each new candidate once; new data alone does not re-judge the same model
    automation_condition=dg.AutomationCondition.eager().ignore(
        dg.AssetSelection.assets("training_set")),
)
def gate_report(context: dg.AssetExecutionContext, config: GateConfig, pinn_model: ModelCandidate,
                classical_inversion: ModelCandidate, training_set: StoredTrainingSet,
                storage: PlatformStorage, mlflow: MlflowTracking, alerts: AlertWebhook):
    """The PINN, the classical fit and the champion side by side, and the decision: the best
    model of any kind that passes every threshold (heat_platform.models.gate)."""
    import tempfile
    from pathlib import Path

    from heat_platform.models.gate import review
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.models.tracking import log_bytes

    experiment = pinn_model.experiment
    _, spec = current_spec(storage.catalog(), experiment)
    store = mlflow.store()
    registry = ModelRegistry(store, storage.catalog())
    # every version is judged once: a classical fit of the same training set judged before (the
    # gate runs again for an escalated or re-trained PINN) stays as the gate left it
    candidates = {c.version: c for c in (pinn_model, classical_inversion)
                  if c is pinn_model or not registry.judged(experiment, c.version)}
    with tempfile.TemporaryDirectory() as workdir:
        result = review(registry, list(candidates.values()), training_set, spec,
                        config.thresholds(), workdir=Path(workdir))
    decision = result.decision
    actor, run_id = "gate", context.run_id
    for version, failures in decision.failed_versions().items():
        registry.reject(experiment, version, actor=actor, reasons=failures, dagster_run_id=run_id)
    if decision.decision == "reject" and decision.candidate_version not in \
            decision.failed_versions():
        registry.reject(experiment, decision.candidate_version, actor=actor,
                        reasons=decision.reasons, dagster_run_id=run_id)
    elif decision.decision == "pending":
        registry.mark_pending(experiment, decision.candidate_version, actor=actor,
                              reasons=decision.reasons, dagster_run_id=run_id)
    for version in candidates:
        registry.mark_judged(experiment, version, run_id)
    winner = candidates.get(decision.candidate_version, pinn_model)
    if decision.decision == "reject":
        alerts.send(severity="error" if decision.stale_champion else "warning",
                    experiment=experiment,
                    title=(f"the served model of {experiment} is stale" if decision.stale_champion
                           else f"gate rejected {pinn_model.model_name} "
                                f"v{decision.candidate_version}"),
                    details={"reasons": decision.reasons, "scores": decision.scores},
                    links={"mlflow run": store.run_url(pinn_model.mlflow_experiment_id,
                                                       pinn_model.run_id)})
    client = store.client()
    for candidate in candidates.values():  # the report travels with every candidate's run
        client.log_text(candidate.run_id, result.report, "gate/report.md")
        log_bytes(store.mlflow(), result.figure_png, "gate/diffusivity.png",
                  run_id=candidate.run_id)
        client.log_dict(candidate.run_id, {
            "decision": decision.decision, "reasons": decision.reasons,
            "winner": decision.candidate_version, "competed": decision.competed,
            "scores": decision.scores}, "gate/decision.json")
        client.set_tag(candidate.run_id, "heat_platform.gate",
                       decision.decision if candidate is winner else "not chosen")
    context.log.info(f"gate: {decision.decision} v{decision.candidate_version} "
                     f"({decision.candidate_kind}): " + "; ".join(decision.reasons))
    yield dg.Output(decision, metadata={
        "decision": decision.decision,
        "candidate": f"{winner.model_name} v{decision.candidate_version}",
        "model kind": decision.candidate_kind,
        "competed": ", ".join(f"{c['label']} v{c['version']}" for c in decision.competed),
        "champion": f"v{decision.champion_version}" if decision.champion_version else "none",
        "stale champion": decision.stale_champion,
        "reasons": dg.MetadataValue.json(decision.reasons),
        "scores": dg.MetadataValue.json({c["label"]: {"kind": c["kind"], "version": c["version"],
                                                      "passes": not c["failures"],
                                                      **decision.scores[c["label"]]}
                                         for c in decision.competed}),
        # the PINN failed on its fit: train it once more with the stronger profile (not again
        # after an escalation); assets.training.escalation_sensor launches that run
        "escalate": (decision.escalate and pinn_model.profile in STRONGER
                     and context.run_tags.get(TRIGGER) != ESCALATION
                     and PlatformSettings.load().escalation),
        "data_version": training_set.data_version,
        "pinn profile": pinn_model.profile,
        "report": dg.MetadataValue.md(result.report),
        "mlflow run": dg.MetadataValue.url(store.run_url(winner.mlflow_experiment_id,
                                                         winner.run_id)),
    })
    yield dg.AssetCheckResult(check_name=PROMOTED, passed=decision.promoted,
                              description="; ".join(decision.reasons),
                              metadata={"decision": decision.decision})


class ChampionConfig(dg.Config):
    action: Literal["follow_gate", "approve", "rollback"] = Field(
        default="follow_gate", description="follow_gate: promote what the gate promoted; approve: "
        "promote a pending version; rollback: return to `version` or to the previous champion.")
    version: str | None = Field(default=None, description="Model version to approve or roll back to.")
    actor: str = Field(default="dagster", description="Who asked (for the audit log).")


@dg.asset(
    partitions_def=experiments,
    group_name="gate",
    kinds={"mlflow"},
    owners=["team:heat-platform"],
    automation_condition=dg.AutomationCondition.eager()
    & dg.AutomationCondition.all_deps_blocking_checks_passed(),
)
def champion_model(context: dg.AssetExecutionContext, config: ChampionConfig,
                   gate_report: GateDecision, storage: PlatformStorage,
                   mlflow: MlflowTracking) -> dg.Output[Champion]:
    """The experiment's serving model version (MLflow alias ``champion``) and its lineage."""
    from heat_platform.models.registry import ModelRegistry, RegistryError

    experiment = context.partition_key
    registry = ModelRegistry(mlflow.store(), storage.catalog())
    run_id = context.run_id
    try:
        if config.action == "follow_gate":
            if not gate_report.promoted:
                raise RegistryError(f"the gate did not promote v{gate_report.candidate_version} "
                                    f"({gate_report.decision}: {'; '.join(gate_report.reasons)})")
            entry = registry.promote(experiment, gate_report.candidate_version, actor="gate",
                                     reasons=gate_report.reasons, dagster_run_id=run_id)
        elif config.action == "approve":
            entry = registry.approve(experiment, config.version or gate_report.candidate_version,
                                     actor=config.actor, dagster_run_id=run_id)
        else:
            entry = registry.rollback(experiment, config.version, actor=config.actor,
                                      dagster_run_id=run_id)
    except RegistryError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    result = registry.current_champion(experiment, storage.paths.store / "models")
    return dg.Output(result, metadata={
        "champion": f"{result.model_name} v{result.version}",
        "action": entry.action,
        "actor": entry.actor,
        "from version": entry.from_version or "none",
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in entry.reasons)),
        "data_version": result.data_version,
        "audit log": dg.MetadataValue.md(_audit_table(storage, experiment)),
    }, data_version=dg.DataVersion(f"{result.model_name}:{result.version}"))


def _audit_table(storage: PlatformStorage, experiment: str) -> str:
    rows = storage.catalog().audit_trail(experiment, limit=20)
    lines = ["| time (UTC) | action | actor | from | to | reasons |", "|---|---|---|---|---|---|"]
    lines += [f"| {e.at:%Y-%m-%d %H:%M:%S} | {e.action} | {e.actor} | {e.from_version or ''} | "
              f"{e.to_version or ''} | {'; '.join(e.reasons)[:200]} |" for e in rows]
    return "\n".join(lines)


approve_job = dg.define_asset_job(
    "approve_model", selection=dg.AssetSelection.assets("champion_model", "deployed_bento"),
    description="Complete a pending promotion (config: action approve, version, actor) and "
    "redeploy. `heat-platform approve` launches it.",
)
rollback_job = dg.define_asset_job(
    "rollback_model", selection=dg.AssetSelection.assets("champion_model", "deployed_bento"),
    description="Move the champion back (config: action rollback, version or the previous "
    "champion, actor) and redeploy. `heat-platform rollback` launches it.",
)


def champion_run_config(action: str, version: str | None, actor: str) -> dict:
    return {"ops": {"champion_model": {"config": {"action": action, "version": version,
                                                  "actor": actor}}}}
