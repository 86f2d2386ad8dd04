"""The landing-zone sensor's decision under a bulk drop: N tiny files in one experiment at once.

    .venv/bin/python bench/landing.py                 # 10,000 files -> bench/results/landing.json
    .venv/bin/python bench/landing.py --files 2000 --output /tmp/landing.json

What is timed: :func:`heat_platform.data.discovery.plan_tick` (what ``landing_zone_sensor`` does
on each tick: list, observe, hash through the hardened open, decide, keep its state), tick after
tick with the platform's default limits, until every file has been announced and one tick more
(the steady state: nothing new). Recorded per run: the number of ticks, the seconds of the first,
the slowest and the steady tick, the cursor's size (Dagster stores it in every tick's record),
the files announced per tick and the peak RSS. The Dagster machinery around a tick (creating
the runs it requests) is not included. Load average is recorded before and after: the machine
is shared.

History and figures: bench/RESULTS.md#landing-zone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "landing.json"
SPEC = "name: flood\ndomain: {x: [0, 1], y: [0, 1], t: [0, 1]}\nsource: 0\n"


def run(n_files: int) -> dict:
    from heat_platform.data.catalog import Catalog
    from heat_platform.data.discovery import plan_tick
    from heat_platform.data.landing import LandingZone
    from heat_platform.files import file_digest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        flood = root / "landing" / "flood"
        flood.mkdir(parents=True)
        (flood / "problem.yaml").write_text(SPEC)
        catalog = Catalog(root / "platform.db")
        catalog.record_spec("flood", sha256=file_digest(flood / "problem.yaml"), blob_path="",
                            valid=True)
        for i in range(n_files):
            (flood / f"tiny{i:05d}.csv").write_text(f"x,y,t,u\n0.5,0.5,0.1,{i}\n")
        zone, cursor, ticks = LandingZone(root / "landing"), None, []
        announced = 0
        while True:
            started = time.perf_counter()
            plan = plan_tick(zone, catalog, cursor)
            ticks.append({"seconds": round(time.perf_counter() - started, 3),
                          "announced": len(plan.batches), "cursor_bytes": len(plan.cursor)})
            cursor, announced = plan.cursor, announced + len(plan.batches)
            if announced >= n_files and not plan.batches:
                break
            if len(ticks) > n_files:
                raise RuntimeError("the flood is never fully announced")
    seconds = [t["seconds"] for t in ticks]
    return {
        "files": n_files,
        "ticks": len(ticks),
        "first_tick_s": seconds[0],
        "slowest_tick_s": max(seconds),
        "steady_tick_s": seconds[-1],
        "most_announced_in_a_tick": max(t["announced"] for t in ticks),
        "largest_cursor_bytes": max(t["cursor_bytes"] for t in ticks),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "per_tick": ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()
    result = run(args.files)
    result["machine"] = machine_info(load, ("polars", "sqlalchemy"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("per_tick", "machine")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
