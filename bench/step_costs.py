"""What each step of the pipeline costs on this machine, for the capacity estimate of a cluster
(bench/RESULTS.md#capacity-on-paper): on Kubernetes every step is a pod of its own
(k8s_job_executor), so it pays its work plus a fresh Python process importing what it needs.

Run from the repository root (DDE_BACKEND=pytorch is set by the script):
    .venv/bin/python bench/step_costs.py            # -> bench/results/step_costs.json
    .venv/bin/python bench/step_costs.py --batches 2 --repeats 3 --out /tmp/steps.json

Measured, into the JSON:

1. ``steps``: the wall time of every step of one experiment through the whole asset graph, in
   process on a fresh platform home (SQLite): the problem spec, ``--batches`` ``inclusion``
   batches ingested and validated, the training set, the classical inversion, a ``smoke`` PINN
   (the PINN's own training time is the profile runs' figure, bench/RESULTS.md#pinn-accuracy),
   the gate (thresholds relaxed for the smoke model), the champion, the bento (build and smoke
   test with `bentoml serve`) and a drift report per batch. Durations are Dagster's
   STEP_SUCCESS durations (the step's code, not the run around it);
2. ``imports``: a fresh interpreter's start and the import of what steps need (the code
   location itself, torch + DeepXDE, Great Expectations, Evidently, MLflow, BentoML), each the
   median of ``--repeats`` fresh processes.

The load average is recorded before and after; the machine is shared, so the seconds are
indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DDE_BACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "step_costs.json"
EXPERIMENT = "inclusion"
SMOKE = {"profile": "smoke", "threads": 2}
RELAXED = {"max_rmse_to_noise": 1e3, "max_residual_relative": 1e3}
IMPORTS = {
    "python only": "pass",
    "heat_platform.definitions (every step)": "import heat_platform.definitions",
    "torch + deepxde (PINN, classical inversion)": "import deepxde",
    "great_expectations (validation)": "import great_expectations",
    "evidently (drift)": "import evidently",
    "mlflow (training, gate, serving)": "import mlflow",
    "bentoml (serving)": "import bentoml",
}


def import_costs(repeats: int) -> dict[str, float]:
    """Median seconds of a fresh ``python -c <statement>``, start to exit."""
    costs = {}
    for name, statement in IMPORTS.items():
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True,
                           env={**os.environ, "DDE_BACKEND": "pytorch"})
            runs.append(time.perf_counter() - started)
        costs[name] = round(statistics.median(runs), 2)
    return costs


def step_durations(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    return {record.event_log_entry.step_key:
            round(record.event_log_entry.dagster_event.event_specific_data.duration_ms / 1000, 2)
            for record in records}


def run_pipeline(home: Path, batches: int) -> list[dict]:
    """One experiment through the whole graph; returns every step's duration, in order."""
    import dagster as dg

    from heat_platform.assets import measurements
    from heat_platform.assets.partitions import batch_partition
    from heat_platform.definitions import defs
    from heat_platform.instance import prepare_instance
    from heat_platform.paths import PlatformPaths
    from heat_platform.resources import build_resources, resolved
    from heat_platform.simulate import simulate_to_landing

    paths = PlatformPaths(home).ensure()
    prepare_instance(paths)
    os.environ["MLFLOW_TRACKING_URI"] = paths.mlflow_tracking_uri
    resources = resolved(build_resources(paths, "local"))
    everything = [*defs.assets, *defs.asset_checks]
    out: list[dict] = []
    # MLflow creates and migrates its tables on first use (once per store, not per step):
    # timed apart, so that the first step that logs to MLflow is not charged for it.
    started = time.perf_counter()
    resources["mlflow"].store().client().search_experiments()
    out.append({"what": "MLflow store creation (once per store)", "step": None,
                "seconds": round(time.perf_counter() - started, 2)})

    with dg.DagsterInstance.get() as instance:
        def run(selection: list[str], partition: str, what: str, **config) -> None:
            result = dg.materialize(everything, selection=selection, instance=instance,
                                    partition_key=partition, resources=resources,
                                    run_config={"ops": config} if config else None)
            for step, seconds in step_durations(instance, result.run_id).items():
                out.append({"what": what, "step": step, "seconds": seconds})

        for seed in range(1, batches + 1):
            simulate_to_landing(paths.landing, EXPERIMENT, seed=seed)
        sensor = measurements.landing_zone_sensor
        cursor = None
        for _ in range(4):  # the spec first, then its batches (as the daemon's ticks)
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources={"storage": resources["storage"]})
            result = sensor(context)
            cursor = result.cursor
            for request in result.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(request.partitions_def_name,
                                                list(request.partition_keys))
            for request in result.run_requests or []:
                job = defs.resolve_job_def(request.job_name)
                selection = [key.to_user_string() for key in job.asset_layer.executable_asset_keys]
                run(selection, request.partition_key, f"{request.job_name} {request.partition_key}")
        run(["training_set"], EXPERIMENT, "training set")
        run(["classical_inversion"], EXPERIMENT, "classical inversion")
        run(["pinn_model", "gate_report", "champion_model"], EXPERIMENT, "smoke PINN, gate, champion",
            pinn_model={"config": SMOKE}, gate_report={"config": RELAXED})
        run(["deployed_bento"], EXPERIMENT, "bento: build, smoke test, publish")
        for seed in range(1, batches + 1):
            batch = batch_partition(EXPERIMENT, f"b{seed:03d}")
            run(["drift_report"], batch, f"drift report {batch}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.perf_counter()
    imports = import_costs(args.repeats)
    with tempfile.TemporaryDirectory(prefix="heat-steps-") as directory:
        os.environ["HEAT_PLATFORM_HOME"] = str(Path(directory) / "platform")
        steps = run_pipeline(Path(directory) / "platform", args.batches)
    result = {
        "benchmark": "per-step wall time of the pipeline, and fresh-process import costs",
        "command": "python bench/step_costs.py " + " ".join(sys.argv[1:]),
        "parameters": {"batches": args.batches, "repeats": args.repeats, "pinn": SMOKE,
                       "gate": RELAXED, "storage": "SQLite, local files (a fresh home)",
                       "batch_rows": "the inclusion scenario's default batch"},
        "imports_s": imports,
        "steps": steps,
        "steps_total_s": round(sum(step["seconds"] for step in steps if step["step"]), 1),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "machine": machine_info(load_before, ("torch", "dagster", "mlflow", "bentoml")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"imports_s": imports, "steps": steps}, indent=1))


if __name__ == "__main__":
    main()
