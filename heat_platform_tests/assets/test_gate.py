"""Stage 5: the gate decides, the champion alias moves only through it, and every decision is
in the append-only audit log.

Tiny models train in seconds, so the gate's data and physics thresholds are relaxed where a
test needs a promotion, and the classical inversion they compete with is fitted on a crude grid
(2 x 2 cells, 2 steps) so that the PINNs' story can be told; the thresholds and the choice
between kinds are tested on hand-made scores in models/test_gate_decisions.py, the classical fit
winning on real data in test_scenarios.py, and a tiny model against the default thresholds is
rejected here.
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


CRUDE = {"grid": 2, "n_steps": 2}  # a classical fit the tiny PINNs beat


def run_config(pinn: dict | None = None, gate: dict | None = None,
               classical: bool = False) -> dict:
    ops = {"pinn_model": {"config": {**TINY, **(pinn or {})}},
           "gate_report": {"config": gate or {}}}
    return {"ops": ops | ({"classical_inversion": {"config": CRUDE}} if classical else {})}


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

    # 1. the first sound model becomes champion; the classical fit (v1) competed and lost
    first = materialize(instance, resources, ["classical_inversion", *GATE], EXPERIMENT,
                        run_config=run_config(gate=RELAXED, classical=True))
    decision = first.output_for_node("gate_report")
    assert decision.decision == "promote" and decision.candidate_kind == "pinn"
    assert [(c["label"], c["version"]) for c in decision.competed] == [("PINN", "2"),
                                                                       ("classical", "1")]
    assert check_passed(instance, first.run_id)
    champion = first.output_for_node("champion_model")
    assert (champion.version, registry.champion(EXPERIMENT).version) == ("2", "2")
    assert champion.kind == "pinn" and registry.version(EXPERIMENT, "1").kind == "classical"
    assert champion.artifact.exists() and champion.training_dagster_run_id == first.run_id
    classical = latest_materialization(instance, "classical_inversion", EXPERIMENT)
    assert classical.metadata["registered model"].value == "heat-model-inclusion v1"
    gate_metadata = latest_materialization(instance, "gate_report", EXPERIMENT).metadata
    report = gate_metadata["report"].value
    assert "PROMOTED v2 (pinn)" in report and "classical v1" in report
    assert gate_metadata["reasons"].value == decision.reasons  # for tools that read the decision
    client = resources["mlflow"].store().client()
    assert client.get_run(champion.run_id).data.tags["heat_platform.gate"] == "promote"
    classical_run = registry.version(EXPERIMENT, "1").run_id
    assert client.get_run(classical_run).data.tags["heat_platform.gate"] == "not chosen"
    for run_id in (champion.run_id, classical_run):  # the report travels with both runs
        artifacts = {a.path for a in client.list_artifacts(run_id, "gate")}
        assert {"gate/report.md", "gate/decision.json", "gate/diffusivity.png"} <= artifacts

    # 2. a worse model against the default thresholds: rejected, nothing downstream runs; the
    # tiny champion fails the default thresholds too, so the alert says the served model is
    # stale (on relaxed thresholds it would simply stay)
    from heat_platform.resources.alerts import AlertWebhook

    url, alerts = receiver
    worse = materialize(instance, {**resources, "alerts": AlertWebhook(url=url)}, GATE,
                        EXPERIMENT, raise_on_error=False,
                        run_config=run_config(pinn={"adam_iterations": 10, "lbfgs_iterations": 0}))
    assert not worse.success and not check_passed(instance, worse.run_id)
    decision = worse.output_for_node("gate_report")
    assert decision.decision == "reject" and decision.champion_version == "2"
    assert any("x the noise level" in r for r in decision.reasons)
    assert decision.stale_champion and "the served model v2 is stale" in decision.reasons[-1]
    assert not worse.asset_materializations_for_node("champion_model")
    assert registry.champion(EXPERIMENT).version == "2"
    assert registry.version(EXPERIMENT, "3").rejected
    (alert,) = alerts  # the rejection was announced on the webhook
    assert alert["title"] == "the served model of inclusion is stale"
    assert alert["severity"] == "error"
    assert alert["details"]["reasons"] == decision.reasons and alert["links"]["mlflow run"]

    # 3. approval mode: a better model waits for a person
    better = materialize(instance, resources, GATE, EXPERIMENT, raise_on_error=False,
                         run_config=run_config(pinn={"adam_iterations": 400, "lbfgs_iterations": 100},
                                               gate={**RELAXED, "require_approval": True}))
    pending = better.output_for_node("gate_report")
    assert pending.decision == "pending", pending.reasons
    assert any("better than champion v2" in r for r in pending.reasons)
    assert not better.asset_materializations_for_node("champion_model")
    assert registry.champion(EXPERIMENT).version == "2" and registry.version(EXPERIMENT, "4").pending

    assert main(["approve", "--experiment", EXPERIMENT, "--version", "3", "--actor", "alice"]) == 1
    assert "not waiting for approval" in capsys.readouterr().err
    assert main(["approve", "--experiment", EXPERIMENT, "--version", "4", "--actor", "alice"]) == 0
    assert "champion is now heat-model-inclusion v4" in capsys.readouterr().out
    assert registry.champion(EXPERIMENT).version == "4"
    assert registry.alias(EXPERIMENT, "previous").version == "2"

    # 4. rollback: to the previous champion; only to a version the audit log shows was champion
    # (never to one that only competed, like the classical v1, nor a rejected or unknown one)
    for version in ("1", "3"):
        assert main(["rollback", "--experiment", EXPERIMENT, "--to-version", version,
                     "--actor", "bob"]) == 1
        assert f"v{version} was never champion" in capsys.readouterr().err
    assert main(["rollback", "--experiment", EXPERIMENT, "--to-version", "9", "--actor", "bob"]) == 1
    assert main(["rollback", "--experiment", EXPERIMENT, "--actor", "bob"]) == 0
    assert registry.champion(EXPERIMENT).version == "2"
    rolled_back = latest_materialization(instance, "champion_model", EXPERIMENT)
    assert rolled_back.metadata["action"].value == "rollback"
    assert rolled_back.metadata["actor"].value == "bob"
    desired = read_json(desired_deployment_path(resources["storage"].paths))
    assert desired["experiments"][EXPERIMENT]["model_version"] == "2"  # what serve rolls out

    # the audit log: every decision, who, from which version to which, why, in which run (a
    # champion move is an intent before the alias moves and a confirmation after)
    entries = list(reversed(storage.catalog().audit_trail(EXPERIMENT)))
    trail = [e for e in entries if e.phase != "intent"]
    assert [(e.action, e.actor, e.from_version, e.to_version) for e in trail] == [
        ("promote", "gate", None, "2"),
        ("reject", "gate", "2", "3"),
        ("pending", "gate", "2", "4"),
        ("approve", "alice", "2", "4"),
        ("deploy", "dagster", None, "4"),  # approving and rolling back redeploy
        ("rollback", "bob", "4", "2"),
        ("deploy", "dagster", None, "2"),
    ]
    assert trail[0].dagster_run_id == first.run_id
    assert any("x the noise level" in r for r in trail[1].reasons)
    assert [e.phase for e in trail] == ["confirmed", None, None, "confirmed", None, "confirmed",
                                        None]
    capsys.readouterr()
    assert main(["audit", "--experiment", EXPERIMENT]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 10 and "rollback/confirmed" in printed[-2] and "bob" in printed[-2]
    assert main(["audit", "--verify"]) == 0
    assert capsys.readouterr().out.startswith("inclusion: OK: 10 entries")

    # ...and it is append-only in the database itself
    engine = storage.catalog().engine
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                      "INSERT OR REPLACE INTO audit_log (id, at, experiment, action, actor) "
                      "VALUES (1, '2026-01-01 00:00:00', 'inclusion', 'promote', 'mallory')"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as db:
            db.execute(sa.text(statement))
    assert len(storage.catalog().audit_trail(EXPERIMENT)) == 10
