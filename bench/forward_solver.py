"""Wall time of the Crank-Nicolson forward solver on PINNacle HeatInv (64x64 and 128x128, 200 steps).

Run from the repository root:  .venv/bin/python bench/forward_solver.py [--repeats 7] [--steps 200]
Writes bench/results/forward_solver.json. Every figure is the median over the repeats; the
total is one ``solve_heat`` call (assembly, factorisation, source evaluation, time stepping,
output array), the parts are timed separately with the same building blocks.

History and figures: bench/RESULTS.md#forward-solver
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from machine import machine_info

from heat_platform.heat.heatinv import heatinv_points, heatinv_spec
from heat_platform.heat.metrics import relative_l2
from heat_platform.heat.solver import (
    PERMC_SPEC,
    CrankNicolson,
    Grid,
    assemble,
    evaluate,
    node_values,
    solve_heat,
    time_levels,
)

RESULTS = Path(__file__).parent / "results" / "forward_solver.json"


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_grid(n: int, n_steps: int, repeats: int) -> dict:
    """HeatInv's a, f and u0 (the spec's parsed formulas), u = 0 on the boundary."""
    spec = heatinv_spec()
    heatinv_a, heatinv_f, heatinv_u = spec.diffusivity_truth, spec.source, spec.temperature_truth

    def heatinv_u0(x, y):
        return heatinv_u(x=x, y=y, t=np.zeros_like(x))

    grid = Grid((-1.0, 1.0), (-1.0, 1.0), n, n)
    times = time_levels((0.0, 1.0), n_steps)
    dt = times[1] - times[0]
    solve_heat(grid, heatinv_a, heatinv_f, 0.0, heatinv_u0, (0.0, 1.0), n_steps)  # warm-up

    total, solution = median_time(
        lambda: solve_heat(grid, heatinv_a, heatinv_f, 0.0, heatinv_u0, (0.0, 1.0), n_steps),
        repeats,
    )
    a_nodes = node_values(grid, heatinv_a)
    factorise, step = median_time(lambda: CrankNicolson.build(assemble(grid, a_nodes), dt), repeats)
    x_i, y_i = grid.X[grid.interior][None, :], grid.Y[grid.interior][None, :]
    shape = (times.size, x_i.size)
    source, f_i = median_time(
        lambda: evaluate(heatinv_f, shape, x=x_i, y=y_i, t=times[:, None]), repeats
    )
    sources = np.array(f_i)
    u0_i = heatinv_u0(grid.X, grid.Y)[grid.interior]
    march, _ = median_time(lambda: step.march(u0_i, sources), repeats)

    x, y, t = heatinv_points().T
    return {
        "grid": f"{n}x{n}",
        "n_steps": n_steps,
        "interior_unknowns": int(grid.interior_index.size),
        "total_s": round(total, 4),
        "assemble_and_factorise_s": round(factorise, 4),
        "source_evaluation_s": round(source, 4),
        "time_stepping_s": round(march, 4),
        "solver_without_source_s": round(factorise + march, 4),
        "relative_l2_u_at_2500_points": float(
            f"{relative_l2(solution.at(x, y, t), heatinv_u(x=x, y=y, t=t)):.3e}"
        ),
        "factor_nnz": int(step.lu_transposed.L.nnz + step.lu_transposed.U.nnz),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    load_before = os.getloadavg()
    runs = [bench_grid(n, args.steps, args.repeats) for n in (64, 128)]
    report = {
        "benchmark": "PINNacle HeatInv forward solve, Crank-Nicolson + sparse LU, t in [0, 1]",
        "statistic": f"median of {args.repeats} repeats after one warm-up",
        "target": "128x128 x 200 steps <= 1 s (2-core machine)",
        "permc_spec": PERMC_SPEC,
        "runs": runs,
        "machine": machine_info(load_before, ("numpy", "scipy")),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
