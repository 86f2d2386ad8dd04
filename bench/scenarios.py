"""The scenario suite: experiments unlike the built-in ones, landing zone to served model.

Each scenario of ``heat_platform/heat/data/scenarios/suite/`` (other rectangles and time spans,
layered, smooth and sharp materials, boundary diffusivities known on the edges only,
distributed and localised sources, zero and warm initial states, 0.5-5 % noise, grid, random and
sparse sensors, with and without a sigma column or a declared noise level) goes through the real
pipeline with the default settings, as a new user's experiment would: a fresh platform home, two
batches landed, the Dagster daemon's sensors and automation do the rest. Recorded per scenario:
what was served first and when (seconds from landing to the deployed bento), its kind and
held-out RMSE / noise, relL2(a) of the PINN, the classical fit and the served model, whether
the gate escalated the PINN to the stronger profile and what that gave, and every run of the
scenario (job, assets, what launched it, how long it took).

    .venv/bin/python bench/scenarios.py [NAME ...] [--escalation-minutes 15] [--out FILE]
    .venv/bin/python bench/scenarios.py --without-truth   # replay the recorded ties, no truth

Writes ``bench/results/scenarios.json`` (a ``scenarios`` list, one record per scenario).
History and figures: bench/RESULTS.md#scenarios
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from machine import machine_info

from heat_platform.heat.synthetic import SCENARIOS
from heat_platform.local import LocalDaemon, latest_materialization, wait_for
from heat_platform.paths import PlatformPaths
from heat_platform.simulate import simulate_to_landing

RESULTS = Path(__file__).parent / "results" / "scenarios.json"
SEEDS = (1, 2)
SERVE_TIMEOUT_S = 1800


def gate_records(instance, experiment: str) -> list[dict]:
    """Every gate decision of the experiment, oldest first, as the UI shows them."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("gate_report"),
                              asset_partitions=[experiment]), limit=20, ascending=True).records
    out = []
    for record in records:
        metadata = record.asset_materialization.metadata
        out.append({key: metadata[key].value for key in (
            "decision", "candidate", "model kind", "competed", "escalate", "pinn profile",
            "stale champion", "scores", "reasons") if key in metadata} | {
            "timestamp": record.timestamp})
    return out


def run_scenario(name: str, root: Path, escalation_minutes: float) -> dict:
    paths = PlatformPaths(root / name).ensure()
    landed_at = time.time()
    for seed in SEEDS:
        simulate_to_landing(paths.landing, name, seed=seed)
    import dagster as dg

    daemon = LocalDaemon(paths)  # the default settings: sensor and automation intervals, profile
    with daemon, dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        def served():
            return latest_materialization(instance, "deployed_bento", name)

        def gated():
            return gate_records(instance, name)

        def seconds_to_served():
            first = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("deployed_bento"),
                                      asset_partitions=[name]), limit=1, ascending=True).records
            return first[0].timestamp - landed_at if first else None

        # the first outcome: a deployed bento, or a gate that served nothing
        wait_for(daemon, lambda: served() or [g for g in gated() if g["decision"] != "promote"],
                 timeout_s=SERVE_TIMEOUT_S, what=f"{name}: a deployed bento or a rejection")
        served_after = seconds_to_served()
        escalated = any(g.get("escalate") for g in gated())
        if escalated:  # the stronger profile's attempt, through the gate
            def second_gate():
                decisions = gated()
                return len(decisions) >= 2 and decisions
            try:
                wait_for(daemon, second_gate, timeout_s=60 * escalation_minutes,
                         what=f"{name}: the escalated PINN's gate")
            except TimeoutError as error:
                print(f"{name}: {error}", flush=True)
        try:  # let the runs in flight finish (the audit trail after a deployment) before stopping
            wait_for(daemon, lambda: all(r.is_finished for r in instance.get_runs()),
                     timeout_s=300, what=f"{name}: the runs in flight")
        except TimeoutError as error:
            print(f"{name}: {error}", flush=True)
        decisions = gated()
        served_after = served_after or seconds_to_served()  # or only after the escalation
        runs = run_log(instance, landed_at)
    return summarise(name, decisions, served_after, escalated) | {"runs": runs}


def run_log(instance, since: float) -> list[dict]:
    """Every run of the scenario, oldest first: when it was created (seconds after landing), how
    long it took, its job, assets, status and what launched it."""
    records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    return [{
        "created_s": round(r.create_timestamp.timestamp() - since, 1),
        "seconds": r.end_time and round(r.end_time - r.create_timestamp.timestamp(), 1),
        "job": r.dagster_run.job_name,
        "assets": sorted(k.to_user_string() for k in r.dagster_run.asset_selection or ()),
        "status": r.dagster_run.status.value,
        "tags": {k: v for k, v in r.dagster_run.tags.items()
                 if k in ("dagster/partition", "dagster/sensor_name", "dagster/tick")
                 or (k.startswith("heat_platform/") and not k.endswith("sha256"))},
    } for r in records]


def summarise(name: str, decisions: list[dict], served_after: float | None,
              escalated: bool) -> dict:
    first = decisions[0]

    def served_scores(decision: dict) -> dict | None:
        if decision["decision"] != "promote":
            return None
        version = decision["candidate"].rpartition(" v")[2]
        return next(s for s in decision["scores"].values() if s["version"] == version)

    served_first = served_scores(first)
    final = next((served_scores(d) for d in reversed(decisions) if d["decision"] == "promote"),
                 None)
    pinn = [d["scores"].get("PINN") for d in decisions]  # each gate's new PINN
    # the escalated PINN is the one trained with another profile than the first
    stronger = [p for p, d in zip(pinn, decisions, strict=True)
                if d.get("pinn profile") != first.get("pinn profile")]
    classical = first["scores"].get("classical")
    scenario = SCENARIOS[name]
    return {
        "name": name,
        "description": scenario.spec.description,
        "served_model_kind": final and final["kind"],
        "served_rmse_to_noise": final and final["rmse_to_noise"],
        "rel_l2_a": {"pinn": pinn[0] and pinn[0]["rel_l2_a"],
                     "pinn_escalated": (stronger and stronger[-1] and stronger[-1]["rel_l2_a"])
                     or None,
                     "classical": classical and classical["rel_l2_a"],
                     "served": final and final["rel_l2_a"]},
        "rmse_to_noise": {"pinn": pinn[0] and pinn[0]["rmse_to_noise"],
                          "pinn_escalated": (stronger and stronger[-1]
                                             and stronger[-1]["rmse_to_noise"]) or None,
                          "classical": classical and classical["rmse_to_noise"]},
        "seconds_landing_to_served": served_after and round(served_after, 1),
        "first_served_kind": served_first and served_first["kind"],
        "escalated": escalated,
        "gate_decisions": decisions,
    }


def without_truth(scenarios: list[dict]) -> list[dict]:
    """Replay, on recorded scores, the ties the truth broke: where the gate judged a PINN and a
    classical fit on a (its reason says which has "the better a"), what each truth-free
    criterion would have chosen: the lower relative PDE residual; the lower held-out RMSE of
    the model's a through the solver; and the gate's rule without a truth (a through the
    solver, but the classical fit stays where the PINN's own fit is worse by more than the
    margin)."""
    from heat_platform.models.gate import Thresholds

    margin = Thresholds().min_improvement
    rows = []
    for scenario in scenarios:
        for decision in scenario["gate_decisions"]:
            scores = decision["scores"]
            if not ({"PINN", "classical"} <= scores.keys()
                    and any("the better a" in reason for reason in decision["reasons"])):
                continue
            row = {"name": scenario["name"]}
            for key in ("rel_l2_a", "residual_relative", "solver_rmse_to_noise"):
                values = {s["kind"]: s.get(key) for s in scores.values()}
                if None not in values.values():
                    row[key] = values | {"chooses": min(values, key=values.get)}
            if "solver_rmse_to_noise" in row:
                gain = 1 - scores["PINN"]["validation_rmse"] / scores["classical"]["validation_rmse"]
                row["gate_without_truth"] = ("classical" if gain < -margin
                                             else row["solver_rmse_to_noise"]["chooses"])
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios (default: the whole suite)")
    parser.add_argument("--escalation-minutes", type=float, default=15.0,
                        help="how long to wait for an escalated PINN's gate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the platform homes")
    parser.add_argument("--without-truth", action="store_true",
                        help="run nothing: replay the ties of --out's recorded gate decisions "
                             "on the PDE residual, as for an experiment without a truth")
    args = parser.parse_args()
    if args.without_truth:
        for row in without_truth(json.loads(args.out.read_text())["scenarios"]):
            print(json.dumps(row))
        return
    names = args.names or [n for n, s in SCENARIOS.items() if s.suite]
    root = Path(tempfile.mkdtemp(prefix="heat-scenarios-"))
    load_before, started = os.getloadavg(), time.perf_counter()
    results = []
    try:
        for name in names:
            began = time.perf_counter()
            result = run_scenario(name, root, args.escalation_minutes)
            result["wall_time_s"] = round(time.perf_counter() - began, 1)
            print(json.dumps({k: result[k] for k in result if k != "gate_decisions"}), flush=True)
            results.append(result)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({
                "benchmark": "scenario suite: landing zone to served model, default settings",
                "seeds": SEEDS, "scenarios": results,
                "wall_time_s": round(time.perf_counter() - started, 1),
                "machine": machine_info(load_before, ("torch", "deepxde", "dagster", "mlflow",
                                                      "bentoml"))}, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
