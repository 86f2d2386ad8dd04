"""Ingestion and validation throughput and peak memory at 1e6 and 1e7 rows.

    .venv/bin/python bench/ingest.py                       # 1e6 and 1e7 rows -> bench/results/ingest.json
    .venv/bin/python bench/ingest.py --sizes 1000000 --gx-full 1000000

What is timed, per size, each in a fresh subprocess (so peak RSS belongs to that size alone):

* ingest: ``ContentStore.put_file`` (copy + sha256 in one pass, fsync, atomic link);
* validate: ``read_batch`` + ``split_rows`` + storing the valid/quarantine tables +
  ``run_expectations`` on the valid rows (GX on at most ``--gx-max-rows`` rows, the library
  default, i.e. the configuration the platform runs);
* GX's import (once per process, reported apart) and GX's share of the validation time
  (the suite plus building its Data Docs, as the platform runs it).

``--gx-full N`` adds a run at N rows with GX on every valid row, to show what GX alone costs.
The synthetic batches are Parquet: 1000 sensors on a grid, a smooth temperature field plus
noise, and 0.1 % deliberately bad rows (NaN, out-of-domain, duplicates) so the quarantine path
is exercised. Load average is recorded before and after each run: the machine is shared.
Options: --sizes N [N ...], --gx-max-rows N, --gx-full N [N ...], --output PATH (the JSON,
default bench/results/ingest.json).

History and figures: bench/RESULTS.md#ingestion-and-validation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOUNDS = {"x": (0.0, 1.0), "y": (0.0, 1.0), "t": (0.0, 100.0)}
RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
N_SENSORS = 1000


def generate(n_rows: int, path: Path) -> None:
    """Synthetic measurements: sensors on a 40 x 25 grid, each with n/1000 times."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(42)
    sensor = np.arange(n_rows) % N_SENSORS
    step = np.arange(n_rows) // N_SENSORS
    gx, gy = np.meshgrid(np.linspace(0.02, 0.98, 40), np.linspace(0.02, 0.98, 25))
    xs, ys = gx.ravel()[sensor], gy.ravel()[sensor]
    t = step * (100.0 / max(1, n_rows // N_SENSORS))
    u = (
        20
        + 5 * np.sin(np.pi * xs) * np.sin(np.pi * ys) * np.exp(-t / 50)
        + rng.normal(0, 0.05, n_rows)
    )
    frame = pl.DataFrame(
        {
            "x": xs,
            "y": ys,
            "t": t,
            "u": u,
            "sigma": np.full(n_rows, 0.05),
            "sensor_id": pl.Series([f"s{i:04d}" for i in range(N_SENSORS)]).gather(sensor),
        }
    )
    bad = rng.choice(n_rows, size=max(3, n_rows // 1000), replace=False)
    third = len(bad) // 3
    u_col = frame["u"].to_numpy().copy()
    x_col = frame["x"].to_numpy().copy()
    u_col[bad[:third]] = np.nan
    x_col[bad[third : 2 * third]] = 1.5
    frame = frame.with_columns(pl.Series("u", u_col), pl.Series("x", x_col))
    frame = pl.concat([frame, frame.gather(np.sort(bad[2 * third :]))])  # exact duplicates
    frame.write_parquet(path)


def worker(path: Path, store_root: Path, gx_max_rows: int | None) -> dict:
    """One measured run; prints a JSON line."""
    t0 = time.perf_counter()
    from heat_platform.data.expectations import import_gx, run_expectations

    import_gx()
    gx_import_s = time.perf_counter() - t0
    rss_after_import = _peak_rss_mib()

    from heat_platform.data.contract import read_batch
    from heat_platform.data.store import ContentStore
    from heat_platform.data.validation import ValidationRules, split_rows

    rules = ValidationRules(temperature_range=(-50.0, 200.0))
    store = ContentStore(store_root)
    phases: dict[str, float] = {}
    peaks: dict[str, float] = {"after_import": rss_after_import}

    start = time.perf_counter()
    blob = store.put_file(path)
    phases["ingest_copy_hash"] = time.perf_counter() - start
    peaks["after_ingest"] = _peak_rss_mib()

    start = time.perf_counter()
    raw = read_batch(blob.path, max_file_bytes=rules.max_file_bytes, max_rows=rules.max_rows)
    phases["read"] = time.perf_counter() - start
    peaks["after_read"] = _peak_rss_mib()

    start = time.perf_counter()
    split = split_rows(raw.frame, BOUNDS, rules)
    phases["row_rules"] = time.perf_counter() - start
    peaks["after_row_rules"] = _peak_rss_mib()
    n_rows = raw.n_rows
    del raw

    start = time.perf_counter()
    store.put_frame(split.valid)
    store.put_frame(split.quarantined)
    phases["store_outputs"] = time.perf_counter() - start

    start = time.perf_counter()
    gx = run_expectations(
        split.valid, BOUNDS, rules, max_rows=gx_max_rows, docs_dir=store_root / "data_docs"
    )
    phases["gx_suite"] = time.perf_counter() - start
    peaks["after_gx"] = _peak_rss_mib()

    validation_s = (
        phases["read"] + phases["row_rules"] + phases["store_outputs"] + phases["gx_suite"]
    )
    return {
        "rows": n_rows,
        "file_bytes": path.stat().st_size,
        "n_valid": split.summary["n_valid"],
        "n_quarantined": split.summary["n_quarantined"],
        "reasons": split.summary["reasons"],
        "gx_max_rows": gx_max_rows,
        "gx_rows_checked": gx.rows_checked,
        "gx_sample": gx.sample,
        "gx_success": gx.success,
        "gx_timings_s": gx.timings_s,
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "gx_import_s": round(gx_import_s, 3),
        "ingest_rows_per_s": round(n_rows / phases["ingest_copy_hash"]),
        "ingest_mib_per_s": round(path.stat().st_size / 2**20 / phases["ingest_copy_hash"], 1),
        "validation_s": round(validation_s, 3),
        "validation_rows_per_s": round(n_rows / validation_s),
        "ingest_plus_validation_s": round(validation_s + phases["ingest_copy_hash"], 3),
        "gx_share_of_validation": round(phases["gx_suite"] / validation_s, 3),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "peak_rss_mib_by_phase": {k: round(v, 1) for k, v in peaks.items()},
        "peak_bytes_per_row": round(_peak_rss_mib() * 2**20 / n_rows, 1),
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _notes(runs: list[dict]) -> list[str]:
    """The figures behind the GX sampling default, in words (also in expectations.py)."""
    notes = [
        "GX runs on at most max_rows valid rows (every k-th row); the polars row rules run on "
        "all rows. Synthetic Parquet compresses well (~7 bytes/row): ingest rows/s scale with "
        "ingest_mib_per_s for real files.",
    ]
    for full in (r for r in runs if r["gx_mode"] == "all valid rows"):
        sampled = [r for r in runs if r["rows"] == full["rows"] and r is not full]
        if sampled:
            notes.append(
                f"{full['rows']:,} rows: GX on all rows {full['phases_s']['gx_suite']} s "
                f"(total {full['ingest_plus_validation_s']} s, peak {full['peak_rss_mib']} MiB) vs "
                f"sampled {sampled[0]['phases_s']['gx_suite']} s (total "
                f"{sampled[0]['ingest_plus_validation_s']} s, peak {sampled[0]['peak_rss_mib']} MiB)"
            )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--gx-max-rows", type=int, default=None, help="GX sample cap (default: the library default)"
    )
    parser.add_argument(
        "--gx-full",
        type=int,
        nargs="*",
        default=[],
        help="sizes to also run with GX on every valid row",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--worker", nargs=3, metavar=("PARQUET", "STORE", "GX_MAX_ROWS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--generate", nargs=2, metavar=("ROWS", "PARQUET"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.generate:
        generate(int(args.generate[0]), Path(args.generate[1]))
        print("{}")
        return
    if args.worker:
        cap = None if args.worker[2] == "all" else int(args.worker[2])
        print(json.dumps(worker(Path(args.worker[0]), Path(args.worker[1]), cap)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from heat_platform.data.expectations import DEFAULT_MAX_ROWS

    default_cap = args.gx_max_rows or DEFAULT_MAX_ROWS
    plan = [(n, str(default_cap)) for n in args.sizes] + [(n, "all") for n in args.gx_full]
    runs = []
    with tempfile.TemporaryDirectory(prefix="heat-bench-") as tmp:
        for n_rows, cap in plan:
            data = Path(tmp) / f"batch_{n_rows}.parquet"
            if not data.exists():
                _run(["--generate", str(n_rows), str(data)])
            load_before = os.getloadavg()
            started = time.perf_counter()
            result = _run(["--worker", str(data), str(Path(tmp) / f"store_{n_rows}_{cap}"), cap])
            result["wall_s"] = round(time.perf_counter() - started, 2)
            result["load_avg_before"] = [round(v, 2) for v in load_before]
            result["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
            result["gx_mode"] = "all valid rows" if cap == "all" else f"sample, at most {cap} rows"
            runs.append(result)
            print(
                json.dumps(
                    {
                        k: result[k]
                        for k in (
                            "rows",
                            "gx_mode",
                            "ingest_plus_validation_s",
                            "validation_rows_per_s",
                            "gx_share_of_validation",
                            "peak_rss_mib",
                            "load_avg_before",
                        )
                    }
                ),
                flush=True,
            )

    report = {
        "benchmark": "bench/ingest.py",
        "command": " ".join([".venv/bin/python", "bench/ingest.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "target": "1e7 rows ingested + validated in < 60 s with peak RSS < 4 GiB",
        "runs": runs,
        "notes": _notes(runs),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2))
    tmp_out.replace(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
