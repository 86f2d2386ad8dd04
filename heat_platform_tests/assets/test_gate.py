"""Stage 5: the gate decides, the champion alias moves only through it, and every decision is
in the append-only audit log.

Tiny models train in seconds, so the gate's data and physics thresholds are relaxed where a
test needs a promotion; the thresholds themselves are tested on hand-made scores in
models/test_gate_decisions.py, and a tiny model against the default thresholds is rejected here.
"""

import dagster as dg
import pytest
import sqlalchemy as sa

from heat_platform.cli import main
from heat_platform.models.registry import ModelRegistry
from heat_platform.serving.rollout import desired_deployment_path, read_json
from heat_platform_tests.assets.conftest import EXPERIMENT, RELAXED, TINY
from heat_platform_tests.conftest import latest_materialization, materialize

GATE = ["pinn_model", "gate_report", "champion_model"]


def run_config(pinn: dict | None = None, gate: dict | None = None) -> dict:
    return {"ops": {"pinn_model": {"config": {**TINY, **(pinn or {})}},
                    "gate_report": {"config": gate or {}}}}


def check_passed(instance, run_id: str) -> bool:
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("gate_report"), "candidate_promoted"), limit=10)
    (record,) = [r for r in records if r.run_id == run_id]
    return record.evaluation.passed


@pytest.mark.slow  # trains models
def test_the_champion_moves_only_through_the_gate_approval_or_rollback(ingested, resources,
                                                                      storage, capsys, receiver):
    instance = ingested
    registry = ModelRegistry(resources["mlflow"].store(), storage.catalog())

    # 1. the first sound model becomes champion, next to the classical inversion
    first = materialize(instance, resources, ["classical_inversion", *GATE], EXPERIMENT,
                        run_config=run_config(gate=RELAXED))
    assert first.output_for_node("gate_report").decision == "promote"
    assert check_passed(instance, first.run_id)
    champion = first.output_for_node("champion_model")
    assert (champion.version, registry.champion(EXPERIMENT).version) == ("1", "1")
    assert champion.artifact.exists() and champion.training_dagster_run_id == first.run_id
    classical = latest_materialization(instance, "classical_inversion", EXPERIMENT)
    assert classical.metadata["relL2(a) vs truth"].value < 0.2  # smooth a, recovered classically
    report = latest_materialization(instance, "gate_report", EXPERIMENT).metadata["report"].value
    assert "PROMOTED v1" in report and "classical inversion" in report
    run = resources["mlflow"].store().client().get_run(champion.run_id)
    assert run.data.tags["heat_platform.gate"] == "promote"
    artifacts = {a.path for a in resources["mlflow"].store().client().list_artifacts(champion.run_id, "gate")}
    assert {"gate/report.md", "gate/decision.json", "gate/diffusivity.png"} <= artifacts

    # 2. a worse model against the default thresholds: rejected, nothing downstream runs
    from heat_platform.resources.alerts import AlertWebhook

    url, alerts = receiver
    worse = materialize(instance, {**resources, "alerts": AlertWebhook(url=url)}, GATE,
                        EXPERIMENT, raise_on_error=False,
                        run_config=run_config(pinn={"adam_iterations": 10, "lbfgs_iterations": 0}))
    assert not worse.success and not check_passed(instance, worse.run_id)
    decision = worse.output_for_node("gate_report")
    assert decision.decision == "reject" and decision.champion_version == "1"
    assert any("x the noise level" in r for r in decision.reasons)
    assert any("improvement over champion v1" in r for r in decision.reasons)
    assert not worse.asset_materializations_for_node("champion_model")
    assert registry.champion(EXPERIMENT).version == "1"
    assert registry.version(EXPERIMENT, "2").rejected
    (alert,) = alerts  # the rejection was announced on the webhook
    assert alert["title"] == "gate rejected heat-pinn-inclusion v2"
    assert alert["details"]["reasons"] == decision.reasons and alert["links"]["mlflow run"]

    # 3. approval mode: a better model waits for a person
    better = materialize(instance, resources, GATE, EXPERIMENT, raise_on_error=False,
                         run_config=run_config(pinn={"adam_iterations": 400, "lbfgs_iterations": 100},
                                               gate={**RELAXED, "require_approval": True}))
    pending = better.output_for_node("gate_report")
    assert pending.decision == "pending", pending.reasons
    assert any("better than champion v1" in r for r in pending.reasons)
    assert not better.asset_materializations_for_node("champion_model")
    assert registry.champion(EXPERIMENT).version == "1" and registry.version(EXPERIMENT, "3").pending

    assert main(["approve", "--experiment", EXPERIMENT, "--version", "2", "--actor", "alice"]) == 1
    assert "not waiting for approval" in capsys.readouterr().err
    assert main(["approve", "--experiment", EXPERIMENT, "--version", "3", "--actor", "alice"]) == 0
    assert "champion is now heat-pinn-inclusion v3" in capsys.readouterr().out
    assert registry.champion(EXPERIMENT).version == "3"
    assert registry.alias(EXPERIMENT, "previous").version == "1"

    # 4. rollback: to the previous champion; never to a rejected or unknown version
    assert main(["rollback", "--experiment", EXPERIMENT, "--to-version", "2", "--actor", "bob"]) == 1
    assert "rejected by the gate" in capsys.readouterr().err
    assert main(["rollback", "--experiment", EXPERIMENT, "--to-version", "9", "--actor", "bob"]) == 1
    assert main(["rollback", "--experiment", EXPERIMENT, "--actor", "bob"]) == 0
    assert registry.champion(EXPERIMENT).version == "1"
    rolled_back = latest_materialization(instance, "champion_model", EXPERIMENT)
    assert rolled_back.metadata["action"].value == "rollback"
    assert rolled_back.metadata["actor"].value == "bob"
    desired = read_json(desired_deployment_path(resources["storage"].paths))
    assert desired["experiments"][EXPERIMENT]["model_version"] == "1"  # what serve rolls out

    # the audit log: every decision, who, from which version to which, why, in which run
    trail = list(reversed(storage.catalog().audit_trail(EXPERIMENT)))
    assert [(e.action, e.actor, e.from_version, e.to_version) for e in trail] == [
        ("promote", "gate", None, "1"),
        ("reject", "gate", "1", "2"),
        ("pending", "gate", "1", "3"),
        ("approve", "alice", "1", "3"),
        ("deploy", "dagster", None, "3"),  # approving and rolling back redeploy
        ("rollback", "bob", "3", "1"),
        ("deploy", "dagster", None, "1"),
    ]
    assert trail[0].dagster_run_id == first.run_id
    assert any("improvement over champion" in r for r in trail[1].reasons)
    capsys.readouterr()
    assert main(["audit", "--experiment", EXPERIMENT]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 7 and "rollback" in printed[-2] and "bob" in printed[-2]

    # ...and it is append-only in the database itself
    engine = storage.catalog().engine
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as db:
            db.execute(sa.text(statement))
    assert len(storage.catalog().audit_trail(EXPERIMENT)) == 7
