"""`heat-platform demo`: the whole asset graph end to end on a built-in synthetic experiment.

Runs like production, only faster ticks: synthetic batches land in the landing zone, and the
Dagster daemon's sensors and declarative automation do the rest. The demo only waits for what
the instance records and tells the story. Idempotent: on a second run the files are already in
place, nothing new happens, and the story is told from the recorded state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from heat_platform.local import LocalDaemon, latest_materialization, ticks_since, wait_for
from heat_platform.paths import PlatformPaths
from heat_platform.simulate import simulate_to_landing

EXPERIMENT = "inclusion"
BASELINE_SEEDS = (1, 2)


@dataclass
class Story:
    started: float

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)


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
        story.say("dagster-daemon started: landing_zone_sensor and automation are ticking")

        def wait(what: str, probe: Callable):
            return wait_for(daemon, probe, timeout_s=timeout_s, what=what, interval_s=2)

        def has_batches(batches: list[str]):
            def probe():
                found = latest_materialization(instance, "training_set", EXPERIMENT)
                if found and all(b in found.metadata["partitions"].value for b in batches):
                    return found
                return None
            return probe

        baseline = [p.stem for p in landed]
        training = wait("a training set with the baseline batches", has_batches(baseline))
        story.say(f"training_set {training.metadata['data_version'].value[:12]}: "
                  f"{training.metadata['n_train'].value} training rows, "
                  f"{training.metadata['n_validation'].value} validation rows on "
                  f"{training.metadata['held-out sensors'].value} held-out sensors")
        champion = wait("the first champion to be deployed",
                        lambda: latest_materialization(instance, "deployed_bento", EXPERIMENT))
        _tell_gate(story, instance)
        story.say(f"deployed {champion.metadata['bento'].value}: smoke test max |u - MLflow u| = "
                  f"{champion.metadata['smoke test: max |u - MLflow u|'].value:.2g}")
        _ask_the_service(story, paths)

        def land_and_judge(seed: int, what: str):
            landed = simulate_to_landing(paths.landing, "inclusion", experiment=EXPERIMENT,
                                         seed=seed, shift="material")
            story.say(f"landed {landed.name}: {what}")
            report = wait(f"the drift report of {landed.stem}",
                          lambda: latest_materialization(instance, "drift_report", _batch_key(landed.stem)))
            _tell_drift(story, landed.stem, report)

        # the material changes: drift -> retrain on the new regime -> gate -> deploy
        land_and_judge(3, "the inclusion moved and grew")
        first_version = int(champion.metadata["champion version"].value)
        second = wait("the retrained champion to be deployed",
                      lambda: _deployed_version(instance, after=first_version))
        _tell_gate(story, instance)
        story.say(f"deployed {second.metadata['bento'].value}")

        # more of the same new material: no drift, no retrain
        land_and_judge(4, "more readings of the new material")
        judged = time.time()
        wait("two sensor and automation ticks after that report", lambda: all(
            ticks_since(instance, name, judged) >= 2
            for name in ("drift_retrain_sensor", "automation")))
        retrains = instance.get_runs(filters=dg.RunsFilter(job_name="retrain"))
        story.say(f"retraining runs: {len(retrains)} (one per drift episode)")
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


def _batch_key(batch: str) -> str:
    from heat_platform.assets.partitions import batch_partition

    return str(batch_partition(EXPERIMENT, batch))


def _deployed_version(instance, after: int):
    """The newest deployment, once it serves a version registered after ``after``."""
    found = latest_materialization(instance, "deployed_bento", EXPERIMENT)
    if found is None:
        return None
    return found if int(found.metadata["champion version"].value) > after else None


def _tell_gate(story: Story, instance) -> None:
    gate = latest_materialization(instance, "gate_report", EXPERIMENT)
    lines = [line for line in gate.metadata["report"].value.splitlines()
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
