"""`heat-platform demo`: the whole asset graph end to end on a built-in synthetic experiment.

Runs like production, only faster ticks: synthetic batches land in the landing zone, and the
Dagster daemon's sensors and declarative automation do the rest. The demo only waits for what
the instance records and tells the story.

The story is read from the instance's history in the order it happened, never from "the latest"
of anything: each chapter waits for the first record, after the previous chapter's, that
answers it. So a second demo retells a finished story (the files it lands are already there,
byte for byte, and nothing new happens), and a demo stopped half-way carries on where the
first one stopped. Outcomes the story did not plan for (a model the gate rejects, a batch that
does not drift) are told, not waited for until the timeout. Whatever stops the demo (Ctrl-C,
SIGTERM, a stage's timeout) stops the daemon it started (:class:`LocalDaemon`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from heat_platform.data.ingest import markdown_text
from heat_platform.local import LocalDaemon, ticks_since, wait_for
from heat_platform.paths import PlatformPaths
from heat_platform.simulate import simulate_to_landing

EXPERIMENT = "inclusion"
BASELINE_SEEDS = (1, 2)
DRIFT_SEED, BENIGN_SEED = 3, 4
RETRAIN_FAILED = "failed"


@dataclass
class Story:
    started: float

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)


class History:
    """The instance's materializations of one experiment's assets, oldest first."""

    def __init__(self, instance) -> None:
        self.instance = instance

    def records(self, asset: str, partition: str = EXPERIMENT, after: int = 0) -> list:
        """EventLogRecords (``.storage_id``, ``.asset_materialization``) after ``after``."""
        import dagster as dg

        return [r for r in self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
            limit=10_000, ascending=True).records if r.storage_id > after]

    def first(self, asset: str, where: Callable = lambda metadata: True,
              partition: str = EXPERIMENT, after: int = 0):
        """The first record whose materialization's metadata satisfies ``where``, or None."""
        return next((r for r in self.records(asset, partition, after)
                     if where(r.asset_materialization.metadata)), None)

    def last_before(self, asset: str, before: int):
        earlier = [r for r in self.records(asset) if r.storage_id < before]
        return earlier[-1] if earlier else None

    def retrains(self) -> list:
        import dagster as dg

        return self.instance.get_runs(filters=dg.RunsFilter(job_name="retrain"))


def run_demo(paths: PlatformPaths, *, timeout_s: float = 900.0) -> int:
    import dagster as dg

    story = Story(time.monotonic())
    story.say(f"platform home {paths.home}")
    landed = [simulate_to_landing(paths.landing, "inclusion", experiment=EXPERIMENT, seed=seed)
              for seed in BASELINE_SEEDS]
    story.say(f"landed {len(landed)} baseline batches of experiment {EXPERIMENT!r} "
              f"({', '.join(p.name for p in landed)})")

    with LocalDaemon(paths, sensor_interval_s=3, automation_interval_s=5) as daemon, \
            dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        story.say(f"dagster-daemon started (pid {daemon.process.pid}, log {daemon.log_path}): "
                  "landing_zone_sensor and automation are ticking")
        history = History(instance)

        def wait(what: str, probe: Callable):
            return wait_for(daemon, probe, timeout_s=timeout_s, what=what, interval_s=2)

        # the baseline: ingest -> training set -> PINN -> gate -> champion -> deployed bento
        baseline = [markdown_text(p.stem) for p in landed]
        training = wait("a training set with the baseline batches", lambda: history.first(
            "training_set", lambda m: all(b in m["partitions"].value for b in baseline)))
        metadata = training.asset_materialization.metadata
        story.say(f"training_set {metadata['data_version'].value[:12]}: "
                  f"{metadata['n_train'].value} training rows, "
                  f"{metadata['n_validation'].value} validation rows on "
                  f"{metadata['held-out sensors'].value} held-out sensors")
        outcome = wait("the first champion to be deployed (or the gate's refusal)",
                       lambda: _deployment_or_refusal(history, after=training.storage_id))
        _tell_gate(story, history, outcome)
        if outcome.asset_key.to_user_string() != "deployed_bento":
            return _stopped(story, "the gate did not promote the first model")
        deployed = outcome.asset_materialization.metadata
        story.say(f"deployed {deployed['bento'].value}: smoke test max |u - MLflow u| = "
                  f"{deployed['smoke test: max |u - MLflow u|'].value:.2g}")
        _ask_the_service(story, paths)

        def land_and_judge(seed: int, what: str):
            landed = simulate_to_landing(paths.landing, "inclusion", experiment=EXPERIMENT,
                                         seed=seed, shift="material")
            story.say(f"landed {landed.name}: {what}")
            report = wait(f"the drift report of {landed.stem}",
                          lambda: history.first("drift_report", partition=_batch_key(landed.stem)))
            _tell_drift(story, landed.stem, report.asset_materialization)
            return report

        # the material changes: drift -> retrain on the new regime -> gate -> deploy
        report = land_and_judge(DRIFT_SEED, "the inclusion moved and grew")
        if report.asset_materialization.metadata["drift"].value:
            retrained = wait("the retrained champion to be deployed (or the retrain's end)",
                             lambda: _retrain_outcome(history, after=report.storage_id))
            if retrained == RETRAIN_FAILED:
                story.say("the retraining run failed before the gate; the champion stays "
                          "(see Runs in the Dagster UI)")
            else:
                _tell_gate(story, history, retrained)
                if retrained.asset_key.to_user_string() == "deployed_bento":
                    story.say(f"deployed {retrained.asset_materialization.metadata['bento'].value}")
                else:
                    story.say("the gate did not promote the retrained model; the champion stays")
        else:
            story.say("no drift was seen, so nothing was retrained")

        # more of the same new material: no drift, no retrain
        land_and_judge(BENIGN_SEED, "more readings of the new material")
        judged = time.time()
        wait("two sensor and automation ticks after that report", lambda: all(
            ticks_since(instance, name, judged) >= 2
            for name in ("drift_retrain_sensor", "automation")))
        story.say(f"retraining runs: {len(history.retrains())} (one per drift episode)")
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        story.say(f"{len(instance.get_runs())} runs in all, {len(failed)} failed"
                  + "".join(f"\n    failed: {r.job_name} {r.tags.get('dagster/partition', '')} "
                            f"{sorted(k.to_user_string() for k in r.asset_selection or [])}"
                            for r in failed))

    print()
    print("Browse it: make dev, then open http://127.0.0.1:3000/asset-groups "
          "(lineage: Assets > deployed_bento > Lineage; runs: Runs); audit: heat-platform audit; "
          "serve the champion: heat-platform serve.")
    return 0


def _deployment_or_refusal(history: History, after: int):
    """The first champion's deployment after ``after``, or a gate decision that will not lead to
    one (rejected, or pending approval) if that came first; None while neither is recorded."""
    deployed = history.first("deployed_bento", after=after)
    refused = history.first("gate_report", lambda m: m["decision"].value != "promote",
                            after=after)
    found = [r for r in (deployed, refused) if r is not None]
    return min(found, key=lambda r: r.storage_id) if found else None


def _retrain_outcome(history: History, after: int):
    """The retrained champion's deployment (version >= 2) after ``after``; else, once every
    retraining run has ended and none is to be retried, the gate report after ``after`` or
    :data:`RETRAIN_FAILED`; else None (still going)."""
    deployed = history.first("deployed_bento",
                             lambda m: int(m["champion version"].value) >= 2, after=after)
    if deployed is not None:
        return deployed
    runs = history.retrains()
    retry_coming = any(r.tags.get("dagster/will_retry") == "true"
                       and "dagster/auto_retry_run_id" not in r.tags for r in runs)
    if runs and not retry_coming and all(r.is_finished for r in runs):
        return history.first("gate_report", after=after) or RETRAIN_FAILED
    return None


def _stopped(story: Story, why: str) -> int:
    story.say(f"the story stops here: {why} (see the gate report in the Dagster UI, `make dev`)")
    return 1


def _batch_key(batch: str) -> str:
    from heat_platform.assets.partitions import batch_partition

    return str(batch_partition(EXPERIMENT, batch))


def _tell_gate(story: Story, history: History, outcome) -> None:
    """The gate report that decided ``outcome`` (a deployment: the last report before it)."""
    if outcome.asset_key.to_user_string() == "gate_report":
        gate = outcome
    else:
        gate = history.last_before("gate_report", outcome.storage_id)
    if gate is None:
        return
    lines = [line for line in gate.asset_materialization.metadata["report"].value.splitlines()
             if line.startswith(("## Gate", "- ", "| | ", "| validation RMSE", "| relative PDE",
                                 "| relL2"))]
    story.say("gate report:\n    " + "\n    ".join(lines))


def _tell_drift(story: Story, batch: str, report) -> None:
    metadata = report.metadata
    ratio = metadata["misfit ratio"].value if "misfit ratio" in metadata else float("nan")
    story.say(f"drift_report {batch}: drift={metadata['drift'].value}, misfit ratio {ratio:.2f}, "
              f"PSI(u) {metadata.get('psi(u)').value if 'psi(u)' in metadata else float('nan'):.3f}"
              f" -- {metadata['reasons'].value.strip()}")


def _ask_the_service(story: Story, paths: PlatformPaths) -> None:
    """Start the published bento for a moment and ask it one question, as a user would."""
    import httpx

    from heat_platform.serving.rollout import desired_deployment_path, read_json
    from heat_platform.serving.server import BentoServer

    bento = read_json(desired_deployment_path(paths))["bento"]
    with BentoServer.start(bento, bentoml_home=paths.bentoml_home,
                           log_dir=paths.serving / "servers") as server:
        server.wait_ready()
        answer = httpx.get(f"{server.url}/predict-temperature",
                           params={"x": 1.0, "y": 0.5, "t": 0.25}, timeout=30).json()
    story.say(f"GET /predict-temperature?x=1&y=0.5&t=0.25 -> u={answer['u']:.4f} from "
              f"{answer['model_name']} v{answer['model_version']} (data {answer['data_version'][:12]},"
              f" in_domain={answer['in_domain']})")
