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

from heat_platform.local import LocalDaemon, wait_until
from heat_platform.paths import PlatformPaths
from heat_platform.simulate import simulate_to_landing

EXPERIMENT = "inclusion"
BASELINE_SEEDS = (1, 2)


@dataclass
class Story:
    started: float

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)


def latest(instance, asset: str, partition: str | None = None):
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                              asset_partitions=[partition] if partition else None), limit=1)
    return records.records[0].asset_materialization if records.records else None


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
            return wait_until(probe, timeout_s=timeout_s, what=what, daemon=daemon, interval_s=2)

        def has_batches(batches: list[str]):
            def probe():
                found = latest(instance, "training_set", EXPERIMENT)
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
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        story.say(f"{len(instance.get_runs())} runs so far, {len(failed)} failed")

    print()
    print("Browse it: make dev, then open http://127.0.0.1:3000/asset-groups "
          "(lineage: Assets > training_set > Lineage; runs: Runs).")
    return 0
