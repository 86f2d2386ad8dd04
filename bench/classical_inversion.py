"""Classical inversion (discrete adjoint + Tikhonov + L-BFGS-B) on PINNacle HeatInv.

Run from the repository root:  .venv/bin/python bench/classical_inversion.py
    [--seeds 0 1 2] [--penalties gradient laplacian]
Writes bench/results/classical_inversion.json: for noise seeds 0, 1, 2 and both penalties,
PINNacle's L2RE on the stacked (u, a), relL2(a), relL2(u) (at 20k uniform points, seed 0),
the weight the discrepancy principle chose, iterations and wall time. One BLAS thread, as
in the reference figures of /work/shared/benchmarks/pinnacle-heatinv/README.md.

What the inversion is given: the 2500 shipped points with u + N(0, 0.1^2), sigma = 0.1, the
source f, a = 2 on the boundary (``heat_platform.heat.heatinv``). Not the initial or the
boundary temperature (estimated); the spec's truth formulas are used only to score.

History and figures: bench/RESULTS.md#classical-inversion
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy: SuperLU's small BLAS calls go single-threaded

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_info  # noqa: E402

from heat_platform.heat.heatinv import heatinv_observations, heatinv_spec  # noqa: E402
from heat_platform.heat.inversion import invert_diffusivity  # noqa: E402
from heat_platform.heat.metrics import pinnacle_l2re, relative_l2, uniform_points  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "classical_inversion.json"


def observations(seed: int) -> dict[str, np.ndarray]:
    """The shipped points, u + N(0, 0.1^2) drawn with default_rng(seed), sigma per point."""
    data = heatinv_observations(noise_seed=seed)
    return {"x": data.x, "y": data.y, "t": data.t, "u": data.u, "sigma": data.sigma}


def run(penalty: str, seed: int, evaluation: dict[str, np.ndarray]) -> dict:
    spec = heatinv_spec()
    wall, cpu = time.perf_counter(), time.process_time()
    result = invert_diffusivity(
        observations(seed),
        domain=spec.domain.bounds(),
        source=spec.source,
        boundary_diffusivity=spec.boundary_diffusivity,
        penalty=penalty,
        weight="discrepancy",
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    x, y, t = evaluation["x"], evaluation["y"], evaluation["t"]
    u_hat, a_hat = result.temperature(x, y, t), result.diffusivity(x, y)
    u_true, a_true = spec.temperature_truth(x=x, y=y, t=t), spec.diffusivity_truth(x=x, y=y)
    return {
        "penalty": penalty,
        "noise_seed": seed,
        "l2re": round(pinnacle_l2re(u_hat, a_hat, u_true, a_true), 4),
        "rel_l2_a": round(relative_l2(a_hat, a_true), 4),
        "rel_l2_u": round(relative_l2(u_hat, u_true), 4),
        "weight": float(f"{result.weight:.4g}"),
        "chi2_per_observation": round(result.chi2_per_observation, 4),
        "iterations": result.iterations,
        "evaluations": result.evaluations,
        "wall_time_s": round(wall, 2),
        "cpu_time_s": round(cpu, 2),
        "search": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in step.items()}
            for step in result.history
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--penalties", nargs="+", default=["gradient", "laplacian"])
    args = parser.parse_args()

    evaluation = uniform_points(heatinv_spec().domain.bounds(), 20_000, seed=0)
    load_before = os.getloadavg()
    runs = []
    for penalty in args.penalties:
        for seed in args.seeds:
            runs.append(run(penalty, seed, evaluation))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "search"}), flush=True)
    summary = {
        penalty: {
            key: {
                "mean": round(statistics.mean(r[key] for r in runs if r["penalty"] == penalty), 4),
                "min": min(r[key] for r in runs if r["penalty"] == penalty),
                "max": max(r[key] for r in runs if r["penalty"] == penalty),
            }
            for key in ("l2re", "rel_l2_a", "rel_l2_u", "wall_time_s")
        }
        for penalty in args.penalties
    }
    report = {
        "benchmark": "PINNacle HeatInv, classical inversion (discrete adjoint, Tikhonov, L-BFGS-B)",
        "setup": {
            "grid": "31x31 cells, 50 Crank-Nicolson steps",
            "observations": "2500 shipped points, u + N(0, 0.1^2), sigma = 0.1 given",
            "known": "source f, a = 2 on the boundary; initial and boundary u estimated",
            "weight": "discrepancy principle, chi^2 / n <= 1",
            "score": "20000 uniform points (metrics.uniform_points, seed 0)",
            "threads": "one BLAS thread",
        },
        "reference_from_readme": {
            "gradient": "L2RE 0.065-0.074 in under 1 s",
            "laplacian": "L2RE 0.038-0.050 (mean 0.042) in about 5 s",
            "pinn_w": 0.0526,
            "trivial_floor_a_equals_2": 0.252,
        },
        "summary": summary,
        "runs": runs,
        "machine": machine_info(load_before, ("numpy", "scipy")),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
