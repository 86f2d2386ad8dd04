"""The spread of a few serving scenarios: each repeated against labelled bento variants in turn.

bench/serving.py measures every scenario once; on 2 cores shared with the load generator one
8-second figure moves a lot from run to run (which front worker the clients' connections land
on, what else the machine does), so a change is judged here by repeating the scenarios that
matter, interleaved across the variants so that the machine's drift falls on all of them alike.

Run from the repository root:
    .venv/bin/python bench/serving_trials.py --trials 5 \
        --scenarios single_c16,batch_c64,binary_c16,binary_c64 \
        --variant head:source=/tmp/head_service --out /tmp/trials.json

    git show HEAD~1:bentos/heat_service/service.py > /tmp/head_service/service.py   # etc.

Variants: ``bento`` (the working tree's service, default settings) is always measured; each
``--variant LABEL:KEY=VALUE,...`` adds one with environment overrides (as bench/serving.py's
``--bento-config``), and ``source=DIR`` copies DIR's files over the built bento's sources first
(the service of another commit). ``--served`` adds the user path, `heat-platform serve`
(bench/serving.py's ``served``), and per trial its p95 and points/s against ``--baseline``'s
(default ``bento-no-access-log``: add ``--variant no-access-log:HEAT_SERVING_ACCESS_LOG=0``). Writes per trial and variant p50/p95/p99/max latency, requests
and points per second and the server cores used, and per scenario and variant the median and
range of p95 and of points/s. Options: --trials N (5), --scenarios KIND_cCLIENTS,... (kinds:
single, batch, binary), --variant LABEL:K=V,... (repeatable), --duration S (4), --out PATH.

History and figures: bench/RESULTS.md#serving-trials
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # bench/serving.py: the model, the servers and the load generator


def start_variant(label: str, overrides: dict[str, str], workdir: Path, bento: str,
                  logs: Path) -> serving.Service:
    """A bento server with its own copy of the store, its sources replaced if asked."""
    home = workdir / f"bentoml-{label}"
    shutil.copytree(workdir / "bentoml", home)
    source = overrides.pop("source", None)
    if source:
        sources = next(home.glob("bentos/heat_service/*/src"))
        for file in Path(source).iterdir():
            shutil.copy(file, sources / file.name)
    return serving.start_bento(label, bento, home, logs, overrides)


def summary(rows: list[dict]) -> dict:
    """Per scenario and variant: median and range of p95 and of points/s, and how many runs
    had the server on about one core (all connections on one front worker)."""
    out: dict[str, dict] = {}
    for row in rows:
        out.setdefault(row["scenario"], {}).setdefault(row["service"], []).append(row)
    return {scenario: {label: {
        "trials": len(runs),
        "p95_ms_median": round(statistics.median(r["p95_ms"] for r in runs), 1),
        "p95_ms_range": [min(r["p95_ms"] for r in runs), max(r["p95_ms"] for r in runs)],
        "points_per_s_median": round(statistics.median(r["points_per_s"] for r in runs)),
        "points_per_s_range": [min(r["points_per_s"] for r in runs),
                               max(r["points_per_s"] for r in runs)],
        "one_core_runs": sum(r["server_cores"] < 1.2 for r in runs),
    } for label, runs in by_label.items()} for scenario, by_label in out.items()}


def user_path(rows: list[dict], baseline: str) -> dict:
    """Per scenario: the user path's p95 and points/s over ``baseline``'s, trial by trial (the
    two ran next to each other), their medians and how often the targets held (p95 within
    1.25x, points/s at least 0.8x)."""
    out = {}
    by = {(r["scenario"], r["trial"], r["service"]): r for r in rows}
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        trials = sorted({r["trial"] for r in rows if r["scenario"] == scenario})
        pairs = [(by[(scenario, t, "served")], by[(scenario, t, baseline)]) for t in trials
                 if (scenario, t, "served") in by and (scenario, t, baseline) in by]
        p95 = [round(served["p95_ms"] / direct["p95_ms"], 3) for served, direct in pairs]
        throughput = [round(served["points_per_s"] / direct["points_per_s"], 3)
                      for served, direct in pairs]
        targets = serving.USER_PATH_TARGETS
        out[scenario] = {
            "baseline": baseline, "p95_ratio": p95, "throughput_ratio": throughput,
            "p95_ratio_median": statistics.median(p95),
            "throughput_ratio_median": statistics.median(throughput),
            "trials_meeting_both": sum(a <= targets["p95_ratio_max"]
                                       and b >= targets["throughput_ratio_min"]
                                       for a, b in zip(p95, throughput, strict=True)),
            "trials": len(pairs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenarios", default="single_c16,binary_c64",
                        help="comma-separated KIND_cCLIENTS (kinds: single, batch, binary)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:K=V,...")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--served", action="store_true",
                        help="measure the user path (heat-platform serve) too")
    parser.add_argument("--baseline", default=serving.USER_PATH_BASELINE,
                        help="the variant the user path is compared with")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scenarios = [(text, *text.split("_c")) for text in args.scenarios.split(",")]
    for name in ("HEAT_SERVING_LOG_DIR", "HEAT_SERVING_API_KEY"):
        os.environ.pop(name, None)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"

    load_at_start, started = os.getloadavg(), time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="heat-bench-trials-") as tmp, \
            contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        model, domain, _ = serving.train_model(workdir)
        bento = serving.build(workdir / "bentoml", model, domain)
        services = []
        for label, overrides in [("bento", {}), *map(serving.parse_bento_config, args.variant)]:
            services.append(start_variant(label, overrides, workdir, bento, logs))
            stack.callback(services[-1].stop)
        if args.served:
            services.insert(0, serving.start_served(bento, workdir / "bentoml", workdir, logs))
            stack.callback(services[0].stop)
        pids = {service.label: service.pid for service in services}
        pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
        for trial in range(args.trials):
            for name, kind, clients in scenarios:
                # alternate the order so that no variant always runs right after another
                for service in services if trial % 2 == 0 else services[::-1]:
                    result = pool.submit(
                        serving.run_scenario, service.url, kind, int(clients), domain,
                        max(50, 4 * int(clients)), args.duration, 200_000, pids, service.label,
                        service.kind).result()
                    latency = result["latency_ms"]
                    row = {"trial": trial, "scenario": name, "service": service.label,
                           **{f"{key}_ms": latency[key] for key in ("p50", "p95", "p99", "max")},
                           "requests_per_s": result["requests_per_s"],
                           "points_per_s": result["points_per_s"], "errors": result["errors"],
                           "server_cores": result["cpu_cores_used"]["server_under_test"],
                           "client_cores": result["cpu_cores_used"]["client"]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    report = {"command": "python bench/serving_trials.py " + " ".join(sys.argv[1:]),
              "duration_s": args.duration, "summary": summary(rows),
              **({"user_path": user_path(rows, args.baseline)} if args.served else {}),
              "runs": rows,
              "machine": serving.machine(load_at_start, started)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
