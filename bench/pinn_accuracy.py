"""Accuracy of the PINN on PINNacle HeatInv: L2RE of (u, a) for several noise seeds.

Run from the repository root:
    .venv/bin/python bench/pinn_accuracy.py [--seeds 0 1 2] [--profile accurate] [--threads 2]
        [--device cpu] [--max-minutes 10] [--set name=value ...] [--out PATH] [--classical-only]
Writes bench/results/pinn_accuracy.json (or --out). Each seed draws its own noise N(0, 0.1^2) on
the 2500 shipped points and trains the profile with that seed; the score is PINNacle's joint
L2RE of (u, a) (:func:`heat_platform.heat.metrics.pinnacle_l2re`) at 20000 uniform points of
the space-time box (fixed seed), with relL2(a), relL2(u) and each ensemble member's L2RE beside
it. The truths are used for scoring only. Wall time is that of ``train_pinn`` (DeepXDE is
imported before the clock starts); the machine's load average is recorded before and after
each run, because other work on a shared machine slows training down. ``--max-minutes`` is the
budget per seed (0: none), ``--set`` overrides PINNConfig fields of the profile.

Beside each PINN run: the classical inversion (adjoint FV, Laplacian Tikhonov, discrepancy
principle) on the same noisy observations, scored at the same points, and the same inversion at
the fixed weights ``ORACLE_WEIGHTS``, whose best (``oracle_best``) is an oracle: it picks the
weight with the truth, and so tells how hard a noise draw is for a smoothness prior of any
strength. ``--classical-only`` adds these to an existing JSON without retraining. The target
is L2RE <= 0.04 within 10 minutes on every seed (``target_met``; ``target_met_by_mean`` judges
the mean).

History and figures: bench/RESULTS.md#pinn-accuracy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info

from heat_platform.heat.heatinv import heatinv_observations, heatinv_scaling, heatinv_spec
from heat_platform.heat.metrics import pinnacle_l2re, relative_l2, uniform_points
from heat_platform.pinn.config import PROFILES, PINNConfig
from heat_platform.pinn.trainer import TrainingDiverged, train_pinn

RESULTS = Path(__file__).parent / "results" / "pinn_accuracy.json"
EVAL_POINTS, EVAL_SEED = 20_000, 20_240_601
TARGET = {"l2re": 0.04, "minutes": 10.0}


@dataclasses.dataclass
class EvaluationSet:
    """The scoring points (uniform in the space-time box, fixed seed) and the truths there."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u_true: np.ndarray
    a_true: np.ndarray

    @classmethod
    def of(cls, spec) -> EvaluationSet:
        p = uniform_points(spec.domain.bounds(), EVAL_POINTS, seed=EVAL_SEED)
        x, y, t = p["x"], p["y"], p["t"]
        return cls(x, y, t, spec.temperature_truth(x=x, y=y, t=t), spec.diffusivity_truth(x=x, y=y))

    def errors(self, u: np.ndarray, a: np.ndarray) -> dict:
        """PINNacle's joint L2RE, relL2(a) and relL2(u) of u and a predicted at the points."""
        return {
            "l2re": pinnacle_l2re(u, a, self.u_true, self.a_true),
            "rel_l2_a": relative_l2(a, self.a_true),
            "rel_l2_u": relative_l2(u, self.u_true),
        }


def score(trained, spec) -> dict:
    evaluation = EvaluationSet.of(spec)
    return evaluation.errors(*trained.predict(evaluation.x, evaluation.y, evaluation.t))


def fields_at(net: torch.nn.Module, evaluation: EvaluationSet) -> np.ndarray:
    """[n, 2] (u, a) of the network at the evaluation points."""
    points = np.stack([evaluation.x, evaluation.y, evaluation.t], axis=1)
    with torch.no_grad():
        return net(torch.tensor(points, dtype=next(net.parameters()).dtype)).double().numpy()


def member_l2re(trained, spec) -> list[float]:
    """The L2RE of each of an ensemble's members on its own ([] for a single network)."""
    evaluation = EvaluationSet.of(spec)
    return [round(evaluation.errors(*fields_at(net, evaluation).T)["l2re"], 5)
            for net in trained.members]


ORACLE_WEIGHTS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def classical_beside(seed: int, spec) -> dict:
    """The classical inversion (Laplacian penalty, discrepancy principle) on the same noisy
    observations, scored at the same points as the PINN; beside it, the same inversion at a
    few fixed penalty weights and the best of them (an oracle: it picks the weight with the
    truth), which tells how hard this noise draw is for a smoothness prior at any strength."""
    data, evaluation = heatinv_observations(noise_seed=seed, spec=spec), EvaluationSet.of(spec)
    result = _classical(data, spec, "discrepancy", evaluation)
    sweep = {f"{w:g}": _classical(data, spec, w, evaluation)["l2re"] for w in ORACLE_WEIGHTS}
    best = min(sweep, key=sweep.get)
    return {
        "method": "adjoint FV + Laplacian Tikhonov (discrepancy principle) + L-BFGS-B",
        **result,
        "fixed_weight_l2re": sweep,
        "oracle_best": {"weight": float(best), "l2re": sweep[best]},
    }


def classical_fit(data, spec, weight: str | float):
    """The classical inversion (Laplacian penalty) of the observations ``data`` at ``weight``
    (a number, or "discrepancy" for the discrepancy principle)."""
    from heat_platform.heat.inversion import invert_spec

    return invert_spec(spec, data, weight=weight)


def _classical(data, spec, weight: str | float, evaluation: EvaluationSet) -> dict:
    start = time.perf_counter()
    result = classical_fit(data, spec, weight)
    wall = time.perf_counter() - start
    x, y, t = evaluation.x, evaluation.y, evaluation.t
    errors = evaluation.errors(result.temperature(x, y, t), result.diffusivity(x, y))
    return {**{k: round(v, 5) for k, v in errors.items()}, "wall_time_s": round(wall, 2)}


def add_classical(path: Path) -> None:
    """Put the classical inversion beside the PINN runs already in ``path`` (same seeds, same
    noise draws, same evaluation points), without retraining the PINNs."""
    report = json.loads(path.read_text())
    spec = heatinv_spec()
    for run in report["runs"]:
        run["classical"] = classical_beside(run["noise_seed"], spec)
        print(json.dumps({"noise_seed": run["noise_seed"], **run["classical"]}), flush=True)
    report["summary"].update(classical_summary(report["runs"]))
    path.write_text(json.dumps(report, indent=2) + "\n")


def classical_summary(runs: list[dict]) -> dict:
    return {
        "classical_l2re_mean": round(float(np.mean([r["classical"]["l2re"] for r in runs])), 5),
        "classical_oracle_l2re": [r["classical"]["oracle_best"]["l2re"] for r in runs],
    }


def run_seed(seed: int, config: PINNConfig, spec) -> dict:
    train = heatinv_observations(noise_seed=seed, spec=spec)
    config = dataclasses.replace(config, seed=seed)
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        trained = train_pinn(spec, train, heatinv_scaling(train, spec), config)
    except TrainingDiverged as error:
        return {
            "noise_seed": seed,
            "diverged": str(error),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
    wall = time.perf_counter() - start
    last = trained.history[-1] if trained.history else {}
    result = {
        "noise_seed": seed,
        **{k: round(v, 5) for k, v in score(trained, spec).items()},
        "member_l2re": member_l2re(trained, spec),
        "iterations": trained.iterations,
        "wall_time_s": round(wall, 1),
        "final_loss_pde": last.get("loss_pde"),
        "final_loss_data": last.get("loss_data"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "classical": classical_beside(seed, spec),
    }
    print(json.dumps(result), flush=True)
    return result


def parse_overrides(pairs: list[str]) -> dict:
    """``name=value`` pairs for PINNConfig fields; values are parsed as JSON when possible."""
    fields = {field.name for field in dataclasses.fields(PINNConfig)}
    overrides = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"--set: unknown PINNConfig field {name!r}")
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="accurate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=TARGET["minutes"],
        help="wall-clock budget per seed (0: none)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="override PINNConfig fields of the profile",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--classical-only",
        action="store_true",
        help="only add the classical inversion beside the runs in --out",
    )
    args = parser.parse_args()
    if args.classical_only:
        add_classical(args.out)
        return

    config = PINNConfig.profile(args.profile)
    config = dataclasses.replace(
        config,
        threads=args.threads,
        device=args.device,
        max_minutes=args.max_minutes or None,
        **parse_overrides(args.set),
    ).check()
    torch.set_num_threads(args.threads)
    spec = heatinv_spec()
    import heat_platform.pinn.backend  # noqa: F401 (DeepXDE's seconds of import time, not part of any run's wall time)

    load_before = os.getloadavg()
    runs = [run_seed(seed, config, spec) for seed in args.seeds]
    scored = [run for run in runs if "l2re" in run]
    summary = {}
    if scored:
        l2re = [run["l2re"] for run in scored]
        walls = [run["wall_time_s"] for run in scored]
        in_time = len(scored) == len(runs) and max(walls) <= 60 * TARGET["minutes"]
        summary = {
            "l2re_mean": round(float(np.mean(l2re)), 5),
            "l2re_max": round(max(l2re), 5),
            "rel_l2_a_mean": round(float(np.mean([r["rel_l2_a"] for r in scored])), 5),
            "rel_l2_u_mean": round(float(np.mean([r["rel_l2_u"] for r in scored])), 5),
            "wall_time_s_mean": round(float(np.mean(walls)), 1),
            "wall_time_s_max": round(max(walls), 1),
            "target_met": bool(in_time and max(l2re) <= TARGET["l2re"]),
            "target_met_by_mean": bool(in_time and float(np.mean(l2re)) <= TARGET["l2re"]),
            **classical_summary(scored),
        }

    report = {
        "benchmark": "PINNacle HeatInv (2500 points, noise sigma 0.1), PINN with DeepXDE",
        "metric": f"PINNacle L2RE of (u, a) at {EVAL_POINTS} uniform points (seed {EVAL_SEED})",
        "target": TARGET,
        "profile": args.profile,
        "config": dataclasses.asdict(config),
        "seeds": "each run draws its noise and initialises its networks with its noise seed "
        "(config.seed is replaced)",
        "runs": runs,
        "summary": summary,
        "machine": machine_info(
            load_before, ("torch", "deepxde"), threads=args.threads,
            device=args.device if args.device != "auto"
            else ("cuda" if torch.cuda.is_available() else "cpu")),
        "command": "bench/pinn_accuracy.py "
        + " ".join(
            [
                f"--seeds {' '.join(map(str, args.seeds))}",
                f"--profile {args.profile}",
                f"--threads {args.threads}",
                f"--device {args.device}",
                f"--max-minutes {args.max_minutes:g}",
            ]
            + ([f"--set {' '.join(args.set)}"] if args.set else [])
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
