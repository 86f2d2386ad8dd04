"""The PINN on a scenario's training set, outside Dagster: variants of a profile, scored as the
gate scores them (held-out RMSE / noise, relL2(a), relative PDE residual).

Answers "why does the PINN lose on this scenario?" in minutes rather than a pipeline run: the
training set is built as the pipeline builds it (the suite's two batches, seeds 1 and 2,
simulated by the project's forward solver; the platform's noise rule and held-out sensors), the
profile is trained with ``--set`` overrides, the exported artifact is scored with the gate's
``score_torchscript``. The truth is used for scoring only.

Run from the repository root (one torch thread, so two variants can run side by side on 2 cores):
    .venv/bin/python bench/scenario_pinn.py NAME [--profile fast] [--set name=value ...]
        [--label TEXT] [--out bench/results/scenario_pinn.json]

Each run appends one record to --out. History and figures: bench/RESULTS.md#scenario-suite
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

from drift import simulated_training_set
from machine import machine_info
from pinn_accuracy import parse_overrides
from scenarios import SEEDS

from heat_platform.heat.synthetic import SCENARIOS
from heat_platform.models.scoring import Readings, score_torchscript
from heat_platform.pinn.config import PINNConfig

RESULTS = Path(__file__).parent / "results" / "scenario_pinn.json"


def training_set(name: str):
    """The scenario's spec and its training set as the pipeline builds it from the suite's
    batches (named as ``simulate_to_landing`` names them)."""
    return SCENARIOS[name].spec, simulated_training_set(name, SEEDS, batch_name="b{index:03d}")


def run(name: str, profile: str, overrides: dict, threads: int) -> dict:
    import torch

    from heat_platform.pinn.trainer import train_pinn

    torch.set_num_threads(threads)
    spec, ts = training_set(name)
    train, validation = (Readings.from_frame(frame, spec) for frame in (ts.train, ts.validation))
    config = PINNConfig.profile(profile, threads=threads, **overrides)
    started = time.perf_counter()
    trained = train_pinn(spec, train.observations(), ts.scaling, config,
                         validation=validation.observations())
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        scores = score_torchscript(trained.export(Path(workdir) / "model.pt"), spec, validation,
                                   train=train)
    return {"rmse_to_noise": scores.rmse_to_noise, "rel_l2_a": scores.rel_l2_a,
            "residual_relative": scores.residual_relative,
            "solver_rmse_to_noise": scores.solver_rmse_to_noise,
            "warm_start": trained.warm_start, "iterations": trained.iterations,
            "stopped_by": trained.stopped_by, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(n for n, s in SCENARIOS.items() if s.suite))
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="PINNConfig fields overriding the profile's")
    parser.add_argument("--label", default="", help="what the variant tests")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    load_before = os.getloadavg()
    record = {"scenario": args.name, "profile": args.profile, "overrides": overrides,
              "label": args.label,
              **run(args.name, args.profile, overrides, args.threads),
              "machine": machine_info(load_before, ("torch", "deepxde"), threads=args.threads)}
    print(json.dumps(record), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".lock"), "w") as lock:  # variants run side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
        args.out.write_text(json.dumps({
            "benchmark": "the PINN on a scenario's training set, outside Dagster",
            "runs": [*runs, record]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
