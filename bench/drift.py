"""Drift detection: time to a report, and whether the default thresholds tell benign batches
from shifted ones.

Run from the repository root (DDE_BACKEND=pytorch is set by the script):
    .venv/bin/python bench/drift.py            # full run -> bench/results/drift.json
    .venv/bin/python bench/drift.py --quick    # smoke run: 3 seeds, a shorter ladder, small sizes
    .venv/bin/python bench/drift.py --seeds 40 --sizes 3200 100000 --out /tmp/drift.json
Other options: --threads N (torch, 2), --cache-dir DIR, --skip-timings. A full run takes 6-11
minutes on 2 cores with the champion cached, plus its training the first time (2-10 minutes);
``--quick`` about 1 minute plus training.

The champion is built as the platform builds the demo's: two ``inclusion`` batches (seeds 1, 2)
-> ``build_training_set`` (held-out sensors, validation_fraction 0.2, split seed 0) ->
``train_pinn`` with the ``fast`` profile -> TorchScript, cached under ``--cache-dir`` by a key
over the spec, the seeds, the split and the PINN config. Measured, into the JSON:

1. ``timings``, each size in a fresh subprocess: Evidently's import, the first report, then on
   N benign rows ``input_drift``, ``rmse_to_noise`` and the full ``batch_drift``, and peak RSS;
2. ``cases``: ``batch_drift`` with the default ``DriftThresholds`` on ``--seeds`` fresh batches
   per case (benign; the shipped material and miscalibration shifts; ladders of sensor biases
   and of inclusion amplitudes): the rates flagged (input, physics, overall, with 95 %
   Clopper-Pearson intervals), the misfit ratio, PSI(u), the shift's size in noise units and
   the rates at other thresholds. The load average is recorded at the start and the end.

History and figures: bench/RESULTS.md#drift
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DDE_BACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl
from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "drift.json"
SCENARIO = "inclusion"
BASELINE_SEEDS = (1, 2)  # the champion's training batches
VALIDATION_FRACTION, SPLIT_SEED = 0.2, 0  # heat_platform/assets/features.py defaults
FIRST_SEED = 1000  # benchmark batches: seeds FIRST_SEED, FIRST_SEED + 1, ...
BIASED_FRACTION = 0.25  # as the shipped miscalibration
BIAS_LADDER_SIGMA = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # the shipped miscalibration is 5 sigma
AMPLITUDE_LADDER = (0.0, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0)  # the truth's inclusion amplitude is 2
INCLUSION = "1 + {a:g}*exp(-((x - 1.3)**2 + (y - 0.5)**2)/0.04)"  # the spec's truth, amplitude a
MISFIT_THRESHOLDS = (1.05, 1.1, 1.2, 1.3, 1.5, 2.0)
PSI_THRESHOLDS = (0.02, 0.05, 0.1, 0.2)


# -- the champion ---------------------------------------------------------------------------


def pinn_config(threads: int):
    from heat_platform.pinn.config import PINNConfig

    # the fast profile of the runs recorded in bench/RESULTS.md (before the adaptive one)
    return PINNConfig.profile("quick", lbfgs_iterations=600, n_domain=1000, threads=threads,
                              device="cpu")


def batch_frame(batch) -> pl.DataFrame:
    """A simulated batch as validated rows (the measurement contract, plus ``row``)."""
    frame = pl.DataFrame(batch.columns())
    return frame.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))


def simulated_training_set(name: str, seeds, *, batch_name: str = "{name}-baseline-{seed:03d}"):
    """The training set of scenario ``name``'s batches simulated with ``seeds``, built as
    ``assemble_training_set`` does (the spec's noise level, the default held-out sensors;
    deterministic). ``batch_name`` formats ``name``, ``seed`` and ``index`` (1, 2, ...)."""
    from heat_platform.data.training_set import BatchInput, build_training_set
    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch

    scenario = SCENARIOS[name]
    inputs = []
    for index, seed in enumerate(seeds, start=1):
        frame = batch_frame(simulate_batch(scenario, seed=seed))
        version = hashlib.sha256(frame.write_ipc(None).getvalue()).hexdigest()
        inputs.append(BatchInput(batch_name.format(name=name, seed=seed, index=index), version,
                                 frame))
    return build_training_set(inputs, scenario.spec, validation_fraction=VALIDATION_FRACTION,
                              seed=SPLIT_SEED, noise_sigma=scenario.spec.noise_sigma)


def reference_training_set():
    """The champion's training set."""
    return simulated_training_set(SCENARIO, BASELINE_SEEDS)


def champion(cache_root: Path, threads: int) -> tuple[Path, dict]:
    """The exported champion (trained once per cache key) and facts about its training."""
    from heat_platform.heat.synthetic import SCENARIOS

    config = pinn_config(threads)
    spec_sha = hashlib.sha256(SCENARIOS[SCENARIO].spec_text.encode()).hexdigest()
    key_data = {"scenario": SCENARIO, "spec_sha256": spec_sha, "seeds": BASELINE_SEEDS,
                "validation_fraction": VALIDATION_FRACTION, "split_seed": SPLIT_SEED,
                "config": dataclasses.asdict(config)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    directory = cache_root / key
    model, facts_path = directory / "model.pt", directory / "training.json"
    if model.exists() and facts_path.exists():
        return model, {**json.loads(facts_path.read_text()), "cached": True}

    from heat_platform.models.scoring import Readings
    from heat_platform.pinn.trainer import train_pinn

    spec = SCENARIOS[SCENARIO].spec
    training_set = reference_training_set()
    readings = Readings.from_frame(training_set.train, spec)
    validation = Readings.from_frame(training_set.validation, spec)
    print(f"training the champion ({training_set.train.height} rows, cache {directory}) ...",
          flush=True)
    start = time.perf_counter()
    trained = train_pinn(spec, readings.observations(), training_set.scaling, config,
                         validation=validation.observations())
    directory.mkdir(parents=True, exist_ok=True)
    tmp = trained.export(directory / f"model.{os.getpid()}.pt")
    os.replace(tmp, model)
    facts = {"cache_key": key, "cache_key_data": key_data, "data_version":
             training_set.data_version, "n_train": training_set.train.height,
             "n_validation": training_set.validation.height,
             "iterations": trained.iterations, "wall_time_s": round(time.perf_counter() - start, 1)}
    facts_path.write_text(json.dumps(facts, indent=2))
    return model, {**facts, "cached": False}


# -- timings (one subprocess per size) --------------------------------------------------------


def big_frame(n_rows: int, seed: int = 7) -> pl.DataFrame:
    """``n_rows`` benign rows: copies of the default layout, each with fresh noise."""
    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch

    batch = simulate_batch(SCENARIOS[SCENARIO], seed=seed)
    copies = -(-n_rows // len(batch.u))
    rng = np.random.default_rng([seed, 99])
    noise = rng.normal(0.0, batch.sigma[0], size=copies * len(batch.u))[:n_rows]
    columns = {name: np.tile(values, copies)[:n_rows]
               for name, values in batch.columns().items() if name != "u"}
    columns["u"] = np.tile(batch.u_clean, copies)[:n_rows] + noise
    return pl.DataFrame(columns).with_row_index("row", offset=1)


def timing_worker(n_rows: int, model: Path, threads: int) -> dict:
    """Timings at one size; returns what the parent records."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    from evidently import DataDefinition, Dataset, Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    import_s = time.perf_counter() - start
    rss_after_import = _peak_rss_mib()

    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch
    from heat_platform.monitoring.drift import (
        DriftThresholds,
        batch_drift,
        input_drift,
        rmse_to_noise,
    )
    from heat_platform.pinn.export import load_exported

    spec = SCENARIOS[SCENARIO].spec
    thresholds = DriftThresholds()
    training_set = reference_training_set()
    columns = ["x", "y", "t", "u"]
    warm = batch_frame(simulate_batch(SCENARIOS[SCENARIO], seed=FIRST_SEED - 1))
    start = time.perf_counter()
    input_drift(training_set.train, warm, columns, thresholds)
    first_report_s = time.perf_counter() - start

    frame = big_frame(n_rows)
    rss_before = _peak_rss_mib()
    phases: dict[str, float] = {}
    start = time.perf_counter()
    scores, _, share = input_drift(training_set.train, frame, columns, thresholds)
    phases["input_drift_s"] = time.perf_counter() - start
    rss_input = _peak_rss_mib()
    start = time.perf_counter()
    module = load_exported(model)
    rmse_to_noise(module, frame, spec)
    phases["rmse_to_noise_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = batch_drift(training_set.train, training_set.validation, frame, spec, model,
                         thresholds)
    phases["batch_drift_s"] = time.perf_counter() - start
    return {
        "rows": frame.height,
        "reference_rows": training_set.train.height,
        "evidently_import_s": round(import_s, 3),
        "first_report_s": round(first_report_s, 3),
        **{k: round(v, 3) for k, v in phases.items()},
        "input_share_of_batch_drift": round(phases["input_drift_s"] / phases["batch_drift_s"], 3),
        "rows_per_s_batch_drift": round(frame.height / phases["batch_drift_s"]),
        "peak_rss_mib_after_import": round(rss_after_import, 1),
        "peak_rss_mib_before_report": round(rss_before, 1),
        "peak_rss_mib_after_input_drift": round(rss_input, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "psi": {c: round(v, 5) for c, v in scores.items()},
        "drift_share": share,
        "misfit_ratio": round(report.misfit_ratio, 4),
        "drift": report.drift,
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_timings(sizes: list[int], model: Path, threads: int) -> list[dict]:
    runs = []
    for n_rows in sizes:
        load_before = os.getloadavg()
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--timing-worker", str(n_rows), str(model),
             "--threads", str(threads)], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["process_wall_s"] = round(time.perf_counter() - started, 2)
        result["load_avg_before"] = [round(v, 2) for v in load_before]
        result["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps({k: result[k] for k in ("rows", "evidently_import_s", "input_drift_s",
                                                   "batch_drift_s", "peak_rss_mib")}), flush=True)
        runs.append(result)
    return runs


# -- detection power ------------------------------------------------------------------------


def cases(quick: bool) -> list[dict]:
    """What to simulate: (name, kind, size, shift) with custom shifts of known size."""
    from heat_platform.heat.synthetic import SCENARIOS, Shift

    shipped = SCENARIOS[SCENARIO].shifts
    sigma = SCENARIOS[SCENARIO].spec.noise_sigma
    plan = [{"case": "benign", "kind": "benign", "shift": None},
            {"case": "material (shipped)", "kind": "material", "shift": shipped["material"],
             "size": "moved to x=0.7, amplitude 3"},
            {"case": "miscalibration (shipped)", "kind": "miscalibration",
             "shift": shipped["miscalibration"],
             "size": f"{shipped['miscalibration'].bias / sigma:g} sigma on "
                     f"{shipped['miscalibration'].biased_fraction:.0%}"}]
    biases = BIAS_LADDER_SIGMA[1::2] if quick else BIAS_LADDER_SIGMA
    amplitudes = AMPLITUDE_LADDER[::2] if quick else AMPLITUDE_LADDER
    for b in biases:
        plan.append({"case": f"bias {b:g} sigma", "kind": "miscalibration", "size": b,
                     "shift": Shift(f"{BIASED_FRACTION:.0%} of sensors +{b:g} sigma",
                                    biased_fraction=BIASED_FRACTION, bias=b * sigma)})
    for a in amplitudes:
        plan.append({"case": f"amplitude {a:g}", "kind": "material", "size": a,
                     "shift": Shift(f"inclusion amplitude {a:g} (truth 2)",
                                    diffusivity=INCLUSION.format(a=a))})
    return plan


def _stats(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {}
    return {"min": round(float(v.min()), 4), "median": round(float(np.median(v)), 4),
            "max": round(float(v.max()), 4)}


def _rate(flags: list[bool]) -> dict:
    """Share of True, with a 95 % Clopper-Pearson interval."""
    from scipy.stats import beta

    n, k = len(flags), int(sum(flags))
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return {"rate": round(k / n, 3), "k": k, "n": n, "ci95": [round(lo, 3), round(hi, 3)]}


def run_case(case: dict, seeds: list[int], training_set, model: Path, baseline_clean) -> dict:
    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch
    from heat_platform.monitoring.drift import DriftThresholds, batch_drift

    base = SCENARIOS[SCENARIO]
    spec = base.spec
    thresholds = DriftThresholds()
    shift_name = None
    scenario = base
    if case["shift"] is not None:
        shift_name = "bench"
        scenario = dataclasses.replace(base, shifts={shift_name: case["shift"]})
    reports, times = [], []
    signal = None
    for seed in seeds:
        batch = simulate_batch(scenario, seed=seed, shift=shift_name)
        if signal is None:  # the shift's size in noise units, from the clean temperatures
            sigma = float(batch.sigma[0])
            shift = case["shift"]
            if shift is not None and shift.biased_fraction > 0:  # RMS of the bias over the batch
                signal = float(np.sqrt(shift.biased_fraction) * shift.bias / sigma)
                signal_max = float(shift.bias / sigma)
            else:
                change = batch.u_clean - baseline_clean
                signal = float(np.sqrt(np.mean(change ** 2)) / sigma)
                signal_max = float(np.max(np.abs(change)) / sigma)
        start = time.perf_counter()
        report = batch_drift(training_set.train, training_set.validation, batch_frame(batch),
                             spec, model, thresholds)
        times.append(time.perf_counter() - start)
        reports.append(report)
    misfit = [r.misfit_ratio for r in reports]
    psi = {c: [r.column_scores.get(c) for r in reports] for c in ("x", "y", "t", "u")}
    result = {
        "case": case["case"],
        "kind": case["kind"],
        "size": case.get("size"),
        "description": case["shift"].description if case["shift"] is not None else
        "same material and sensors, fresh noise",
        "diffusivity": case["shift"].diffusivity if case["shift"] is not None else None,
        "biased_fraction": case["shift"].biased_fraction if case["shift"] is not None else 0.0,
        "bias": case["shift"].bias if case["shift"] is not None else 0.0,
        "signal_rms_sigma": round(signal, 3),
        "signal_max_sigma": round(signal_max, 3),
        "n": len(reports),
        "input_drift": _rate([r.input_drift for r in reports]),
        "physics_drift": _rate([r.physics_drift for r in reports]),
        "drift": _rate([r.drift for r in reports]),
        "misfit_ratio": _stats(misfit),
        "rmse_to_noise": _stats([r.rmse_to_noise for r in reports]),
        "reference_rmse_to_noise": reports[0].reference_rmse_to_noise,
        "psi_u": _stats(psi["u"]),
        "psi_max_xyt": round(max(max(v for v in psi[c] if v is not None)
                                 for c in ("x", "y", "t")), 5),
        "drift_share": _stats([r.drift_share for r in reports]),
        "residual_relative": _stats([r.residual_relative for r in reports]),
        "rates_at_other_thresholds": {
            "misfit_ratio": {f"{m:g}": round(float(np.mean([v >= m for v in misfit])), 3)
                             for m in MISFIT_THRESHOLDS},
            "psi_u": {f"{p:g}": round(float(np.mean([v >= p for v in psi["u"]])), 3)
                      for p in PSI_THRESHOLDS},
        },
        "batch_drift_s": _stats(times),
        "per_seed": [{"seed": s, "misfit_ratio": round(r.misfit_ratio, 4),
                      "psi_u": round(r.column_scores.get("u", float("nan")), 5),
                      "drift": r.drift} for s, r in zip(seeds, reports, strict=True)],
    }
    print(json.dumps({k: result[k] for k in ("case", "signal_rms_sigma")}
                     | {"drift": result["drift"]["rate"], "physics": result["physics_drift"]["rate"],
                        "input": result["input_drift"]["rate"], "misfit": result["misfit_ratio"],
                        "psi_u": result["psi_u"]}), flush=True)
    return result


def separation(results: list[dict]) -> dict:
    """How far the default misfit threshold sits from the benign and the shifted ratios."""
    from heat_platform.monitoring.drift import DriftThresholds

    threshold = DriftThresholds().misfit_ratio
    benign = next(r for r in results if r["kind"] == "benign")
    out = {"misfit_threshold": threshold, "benign_max_misfit": benign["misfit_ratio"]["max"],
           "benign_false_alarm": benign["drift"]["rate"]}
    for kind in ("miscalibration", "material"):
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["signal_rms_sigma"])
        reliable = [r for r in rows if r["drift"]["rate"] >= 0.95]
        missed = [r for r in rows if r["drift"]["rate"] < 0.05]
        out[kind] = {
            "smallest_detected_95": (None if not reliable else
                                     {"case": reliable[0]["case"],
                                      "signal_rms_sigma": reliable[0]["signal_rms_sigma"]}),
            "largest_missed_95": (None if not missed else
                                  {"case": missed[-1]["case"],
                                   "signal_rms_sigma": missed[-1]["signal_rms_sigma"]}),
        }
    out["input_drift_ever"] = any(r["input_drift"]["k"] for r in results)
    return out


def notes(results: list[dict], timings: list[dict]) -> list[str]:
    """The figures' reading, computed from them (so they cannot go stale)."""
    from heat_platform.monitoring.drift import DriftThresholds

    limits = DriftThresholds()
    benign = next(r for r in results if r["kind"] == "benign")
    out = [
        f"benign misfit ratio {benign['misfit_ratio']['min']}-{benign['misfit_ratio']['max']} "
        f"over {benign['n']} batches (threshold {limits.misfit_ratio:g}); the champion's "
        f"RMSE/noise on its validation split is {benign['reference_rmse_to_noise']:.3f}",
    ]
    shares = [r["drift_share"]["max"] for r in results]
    psi_u = max(r["psi_u"]["max"] for r in results)
    psi_xyt = max(r["psi_max_xyt"] for r in results)
    out.append(
        f"input drift fired in {sum(r['input_drift']['k'] for r in results)} of "
        f"{sum(r['n'] for r in results)} reports: largest drift share {max(shares):g} (needs "
        f">= {limits.drift_share:g}), largest PSI(u) {psi_u:.3f}, largest PSI of x/y/t "
        f"{psi_xyt:.3f} (threshold {limits.column_threshold:g}). Here every batch has the "
        "reference's sensor layout, so only u can drift: 1 of 4 columns, and no change of the "
        "material or of the calibration can reach the default drift share")
    residuals = {r["residual_relative"].get("min") for r in results} | \
        {r["residual_relative"].get("max") for r in results}
    if len(residuals) == 1:
        out.append(f"residual_relative is {residuals.pop()} in every report: it depends on the "
                   "points (x, y, t) only, not on the readings, so with a fixed sensor layout it "
                   "carries no drift signal")
    for kind in ("miscalibration", "material"):
        rows = sorted((r for r in results if r["kind"] == kind),
                      key=lambda r: r["signal_rms_sigma"])
        out.append(f"{kind}: " + "; ".join(
            f"{r['case']} (RMS {r['signal_rms_sigma']:g} sigma) {r['drift']['rate']:.0%}"
            for r in rows))
    for t in timings:
        out.append(f"{t['rows']:,} rows: batch_drift {t['batch_drift_s']} s (Evidently "
                   f"{t['input_drift_s']} s), peak RSS {t['peak_rss_mib']} MiB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="batches per case")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3200, 100_000, 1_000_000],
                        help="rows of the timed reports")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 seeds, half the ladders, sizes 3200 and 1e5")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training, scoring)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "heat-bench-drift")
    parser.add_argument("--skip-timings", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timing-worker", nargs=2, metavar=("ROWS", "MODEL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.timing_worker:
        print(json.dumps(timing_worker(int(args.timing_worker[0]), Path(args.timing_worker[1]),
                                       args.threads)))
        return
    if args.quick:
        args.seeds = min(args.seeds, 3)
        args.sizes = [n for n in args.sizes if n <= 100_000]

    import torch

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    started = time.perf_counter()
    model, training = champion(args.cache_dir, args.threads)
    print(json.dumps({"champion": str(model), **{k: training[k] for k in
                      ("cached", "wall_time_s", "iterations")}}), flush=True)

    timings = [] if args.skip_timings else run_timings(args.sizes, model, args.threads)

    from heat_platform.heat.synthetic import SCENARIOS, simulate_batch

    training_set = reference_training_set()
    baseline_clean = simulate_batch(SCENARIOS[SCENARIO], seed=0).u_clean
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    from heat_platform.monitoring.drift import DriftThresholds, input_drift

    start = time.perf_counter()  # warm-up: Evidently's import and first report, not timed below
    input_drift(training_set.train, batch_frame(simulate_batch(SCENARIOS[SCENARIO], seed=0)),
                ["x", "y", "t", "u"], DriftThresholds())
    warm_up_s = time.perf_counter() - start
    detection_start = time.perf_counter()
    results = [run_case(case, seeds, training_set, model, baseline_clean)
               for case in cases(args.quick)]
    detection_s = time.perf_counter() - detection_start

    spec = SCENARIOS[SCENARIO].spec
    report = {
        "benchmark": "bench/drift.py",
        "command": " ".join([".venv/bin/python", "bench/drift.py", *sys.argv[1:]]),
        "what": "drift detection (heat_platform.monitoring.drift.batch_drift): time to a report "
                "and detection power of the default thresholds on the inclusion scenario",
        "params": {
            "scenario": SCENARIO,
            "noise_sigma": spec.noise_sigma,
            "batch_rows": len(baseline_clean),
            "baseline_seeds": BASELINE_SEEDS,
            "validation_fraction": VALIDATION_FRACTION,
            "split_seed": SPLIT_SEED,
            "benchmark_seeds": [seeds[0], seeds[-1]] if seeds else [],
            "seeds_per_case": args.seeds,
            "sizes": args.sizes,
            "quick": args.quick,
            "threads": args.threads,
            "thresholds": dataclasses.asdict(DriftThresholds()),
            "biased_fraction": BIASED_FRACTION,
            "bias_ladder_sigma": BIAS_LADDER_SIGMA,
            "amplitude_ladder": AMPLITUDE_LADDER,
            "inclusion_formula": INCLUSION,
            "pinn_config": dataclasses.asdict(pinn_config(args.threads)),
        },
        "champion": {"path": str(model), **training},
        "machine": machine_info(load_start, ("evidently", "torch", "polars", "numpy", "pandas",
                                             "deepxde", "scipy"), platform=platform.platform()),
        "timings": timings,
        "cases": results,
        "separation": separation(results),
        "notes": notes(results, timings),
        "warm_up_s": round(warm_up_s, 2),
        "detection_wall_s": round(detection_s, 1),
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(report["separation"], indent=2))
    print(f"wrote {args.out} in {report['total_wall_s']} s")


if __name__ == "__main__":
    main()
