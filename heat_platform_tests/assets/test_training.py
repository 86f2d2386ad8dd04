"""Stage 4: the PINN asset trains on the training set and lands in MLflow as the challenger."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from heat_platform_tests.assets.conftest import EXPERIMENT, TINY
from heat_platform_tests.conftest import latest_materialization, materialize


def pinn_run_config(**overrides) -> dict:
    return {"ops": {"pinn_model": {"config": {**TINY, **overrides}}}}


@pytest.mark.slow  # trains a model
def test_a_trained_pinn_is_tracked_and_registered_as_the_challenger(ingested, resources,
                                                                   tmp_path):
    result = materialize(ingested, resources, ["pinn_model"], EXPERIMENT,
                         run_config=pinn_run_config())
    candidate = result.output_for_node("pinn_model")
    training_set = materialize(ingested, resources, ["training_set"], EXPERIMENT) \
        .output_for_node("training_set")
    assert candidate.data_version == training_set.data_version

    client = resources["mlflow"].store().client()
    run = client.get_run(candidate.run_id)
    # lineage: which data, which Dagster run, which code and packages
    assert run.data.tags["heat_platform.data_version"] == training_set.data_version
    assert run.data.tags["heat_platform.partitions"] == "b001"
    assert run.data.tags["heat_platform.dagster_run_id"] == result.run_id
    assert run.data.tags["heat_platform.version.torch"].startswith("2.13")
    assert "mlflow.source.git.commit" in run.data.tags
    # the whole config as params, loss terms streamed per step, scores at the end
    assert run.data.params["pinn.adam_iterations"] == "100"
    assert run.data.params["data.n_train"].isdigit()
    history = client.get_metric_history(candidate.run_id, "loss_pde")
    assert len(history) >= 2 and history[0].step < history[-1].step
    for metric in ("score.validation_rmse", "score.residual_relative", "score.rel_l2_a"):
        assert np.isfinite(run.data.metrics[metric])
    artifacts = {a.path for a in client.list_artifacts(candidate.run_id, "figures")}
    assert artifacts == {"figures/diffusivity.png", "figures/loss_curves.png",
                         "figures/residual.png"}

    # a new registered version, with the challenger alias and its lineage as tags
    version = client.get_model_version_by_alias(candidate.model_name, "challenger")
    assert str(version.version) == candidate.version == "1"
    assert version.run_id == candidate.run_id
    assert version.tags["data_version"] == training_set.data_version
    assert version.tags["dagster_run_id"] == result.run_id

    # the registered model is the TorchScript artifact the asset hands on, stored as it is (no
    # pickle) and loaded only after its sha256 matched the one recorded at registration
    import torch

    from heat_platform.files import file_digest
    from heat_platform.models.registry import ArtifactMismatch, ModelRegistry

    assert version.tags["kind"] == "pinn"
    assert version.tags["sha256"] == file_digest(candidate.artifact)
    registry = ModelRegistry(resources["mlflow"].store(), resources["storage"].catalog())
    registered_version = registry.version(EXPERIMENT, candidate.version)
    registered = torch.jit.load(str(registry.download(registered_version, tmp_path / "a")))
    local = torch.jit.load(str(candidate.artifact))
    points = torch.tensor([[0.2, 0.5, 0.1], [1.5, 0.3, 0.4]], dtype=torch.float32)
    torch.testing.assert_close(registered(points), local(points))
    # a file changed in the artifact store since registration is refused, never loaded
    stored = next(Path(run.info.artifact_uri.removeprefix("file://")).rglob("model.pt"))
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(ArtifactMismatch, match="refusing to load"):
        registry.download(registered_version, tmp_path / "b")

    materialization = latest_materialization(ingested, "pinn_model", EXPERIMENT)
    assert materialization.metadata["mlflow run"].value.endswith(candidate.run_id)
    assert materialization.metadata["data_version"].value == training_set.data_version

    # an ensemble: one registered model, each member's curves, the spread of their a
    again = materialize(ingested, resources, ["pinn_model"], EXPERIMENT,
                        run_config=pinn_run_config(seed=1, ensemble=2))
    second = again.output_for_node("pinn_model")
    assert second.version == "2"
    assert str(client.get_model_version_by_alias(candidate.model_name, "challenger").version) == "2"
    assert run.data.params["pinn.ensemble"] == "1"
    assert client.get_run(second.run_id).data.params["pinn.ensemble"] == "2"
    for member in ("member0", "member1"):
        assert len(client.get_metric_history(second.run_id, f"{member}/loss_pde")) >= 2
    assert client.get_metric_history(second.run_id, "loss_pde") == []
    assert {a.path for a in client.list_artifacts(second.run_id, "figures")} == artifacts | {
        "figures/diffusivity_spread.png"}
    spread = client.get_run(second.run_id).data.metrics["ensemble.a_spread_rms"]
    metadata = latest_materialization(ingested, "pinn_model", EXPERIMENT).metadata
    assert metadata["ensemble members"].value == 2
    assert metadata["a spread across members (RMS std)"].value == spread > 0


@pytest.mark.slow  # trains a model
def test_a_diverging_training_fails_clearly_and_registers_nothing(ingested, resources):
    result = materialize(ingested, resources, ["pinn_model"], EXPERIMENT,
                         run_config=pinn_run_config(adam_lr=1e12, adam_iterations=300),
                         raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "training diverged, no model registered" in failure.user_failure_data.description
    assert failure.user_failure_data.metadata["step"].value > 0
    # not retried: a diverging configuration diverges again
    assert len(result.get_step_failure_events()) == 1
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
                   for e in result.all_events)
    assert resources["mlflow"].store().client().search_registered_models() == []


def test_a_profile_sets_the_training_and_any_field_given_overrides_it():
    from heat_platform.assets.training import PINNTrainingConfig

    accurate = PINNTrainingConfig(profile="accurate", threads=2).pinn_config()
    assert accurate.warm_start_a and accurate.freeze_a_steps > 0 and accurate.threads == 2
    plain = PINNTrainingConfig(profile="accurate", warm_start_a=False).pinn_config()
    assert not plain.warm_start_a and plain.freeze_a_steps == accurate.freeze_a_steps
    assert accurate.misfit_floor == 1.0  # the noise level; 0 turns the floor off
    assert PINNTrainingConfig(profile="accurate", misfit_floor=0).pinn_config().misfit_floor == 0
    smoke = PINNTrainingConfig(profile="smoke", device="cpu").pinn_config()
    assert (smoke.adam_iterations, smoke.warm_start_a, smoke.device) == (100, False, "cpu")


def test_an_escalation_names_what_it_materialises():
    """The escalation run's request carries its assets, so that automation, which ignores an
    upstream update only when the run that made it also planned the downstream asset, does not
    take the escalated PINN for news and judge it in a second gate run."""
    from heat_platform.assets.training import ESCALATED, escalation_sensor

    with dg.DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="gate_report", partition=EXPERIMENT,
            metadata={"escalate": True, "pinn profile": "fast", "data_version": "d1"}))
        (request,) = escalation_sensor(dg.build_sensor_context(instance=instance)).run_requests
    assert request.run_key == f"escalate:{EXPERIMENT}:d1"
    assert request.run_config["ops"]["pinn_model"]["config"]["profile"] == "accurate"
    assert {k.to_user_string() for k in request.asset_selection} == set(ESCALATED)
