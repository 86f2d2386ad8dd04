"""plan_tick: what one sensor tick decides, bounded whatever lies in the landing zone."""

from __future__ import annotations

import os
from pathlib import Path

from heat_platform.data.catalog import Catalog
from heat_platform.data.discovery import TickLimits, plan_tick
from heat_platform.data.landing import LandingZone

SPEC = "name: {name}\ndomain: {{x: [0, 1], y: [0, 1], t: [0, 1]}}\nsource: 0\n"


def experiment(landing: Path, name: str, catalog: Catalog) -> Path:
    """An experiment whose problem.yaml counts as ingested and valid (batches may be taken)."""
    from heat_platform.files import file_digest

    directory = landing / name
    directory.mkdir(parents=True)
    (directory / "problem.yaml").write_text(SPEC.format(name=name))
    catalog.record_spec(name, sha256=file_digest(directory / "problem.yaml"), blob_path="",
                        valid=True)
    return directory


def ticks(zone, catalog, limits, n: int):
    cursor, plans = None, []
    for i in range(n):
        plan = plan_tick(zone, catalog, cursor, now_ns=(i + 1) * 10**9, limits=limits)
        cursor = plan.cursor
        plans.append(plan)
    return plans


def test_a_file_over_the_size_limit_is_reported_and_never_announced(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    directory = experiment(tmp_path / "landing", "exp1", catalog)
    (directory / "big.csv").write_bytes(b"x,y,t,u\n" + b"1,2,3,4\n" * 200)
    (directory / "small.csv").write_text("x,y,t,u\n1,2,3,4\n")
    plans = ticks(LandingZone(tmp_path / "landing"), catalog, TickLimits(max_file_bytes=1000), 3)
    assert [a.batch for p in plans for a in p.batches] == ["small"]
    [reason] = {s.reason for s in plans[-1].skipped if s.path.name == "big.csv"}
    assert "too_large: 'big.csv' is 1.6 KiB, above the limit of 1000 bytes" in reason


def test_experiments_take_turns_so_a_bulk_drop_starves_no_one(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    landing = tmp_path / "landing"
    flood = experiment(landing, "flood", catalog)
    for i in range(40):
        (flood / f"f{i:03d}.csv").write_text("x,y,t,u\n1,2,3,4\n")
    other = experiment(landing, "other", catalog)
    (other / "late.csv").write_text("x,y,t,u\n1,2,3,4\n")
    old = 10**18
    os.utime(other / "late.csv", ns=(old, old + 10**9))  # written after the whole flood...
    for i in range(40):
        os.utime(flood / f"f{i:03d}.csv", ns=(old, old + i))
    plans = ticks(LandingZone(landing), catalog, TickLimits(new_batches=5), 12)
    announced = [[f"{a.experiment}/{a.batch}" for a in p.batches] for p in plans]
    assert announced[0] == []  # first seen: wait for one unchanged observation
    assert announced[1] == ["flood/f000", "other/late", "flood/f001", "flood/f002", "flood/f003"]
    assert all(len(batch) <= 5 for batch in announced)
    every = [key for batch in announced for key in batch]
    assert len(every) == len(set(every)) == 41  # each announced exactly once, over 9 ticks
    assert "41 ready file(s)" not in " ".join(plans[1].waiting)
    assert "36 ready file(s) wait for the next tick" in " ".join(plans[1].waiting)


def test_an_oversized_problem_yaml_is_not_read(tmp_path):
    landing = tmp_path / "landing"
    (landing / "exp1").mkdir(parents=True)
    (landing / "exp1" / "problem.yaml").write_text("name: exp1\n# " + "x" * 70_000 + "\n")
    plans = ticks(LandingZone(landing), Catalog(tmp_path / "platform.db"), TickLimits(), 2)
    assert plans[-1].specs == []
    assert any("problem.yaml is 70,014 bytes; the limit is 65,536; not read" in s.reason
               for s in plans[-1].skipped)


def test_the_cursor_stays_small_and_a_lost_tick_is_announced_again_under_the_same_keys(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    directory = experiment(tmp_path / "landing", "exp1", catalog)
    for i in range(1000):
        (directory / f"b{i:04d}.csv").write_text(f"x,y,t,u\n1,2,3,{i}\n")
    zone, limits = LandingZone(tmp_path / "landing"), TickLimits(new_batches=10_000)
    first = plan_tick(zone, catalog, None, now_ns=10**9, limits=limits)
    second = plan_tick(zone, catalog, first.cursor, now_ns=2 * 10**9, limits=limits)
    assert len(second.batches) == 1000
    # Dagster stores the cursor in every tick's record: it must not grow with the files
    assert len(second.cursor) < 100 and len(first.cursor) < 100
    # the daemon died before recording the second tick: its cursor never arrived, so the
    # next tick (given the first cursor again) announces the same content under the same keys
    lost = plan_tick(zone, catalog, first.cursor, now_ns=3 * 10**9, limits=limits)
    assert [a.run_key for a in lost.batches] == [a.run_key for a in second.batches]
    # once a cursor is recorded, nothing is announced again
    recorded = plan_tick(zone, catalog, lost.cursor, now_ns=4 * 10**9, limits=limits)
    assert recorded.batches == []
    assert plan_tick(zone, catalog, recorded.cursor, now_ns=5 * 10**9, limits=limits).batches == []


def test_a_cursor_of_the_first_version_is_moved_into_the_catalog(tmp_path):
    import json

    from heat_platform.files import file_digest

    catalog = Catalog(tmp_path / "platform.db")
    directory = experiment(tmp_path / "landing", "exp1", catalog)
    batch = directory / "b1.csv"
    batch.write_text("x,y,t,u\n1,2,3,4\n")
    entry = lambda path: {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,  # noqa: E731
                          "sha256": file_digest(path), "announced": file_digest(path)}
    old = {"v": 1, "specs": {"v": 1, "files": {"exp1|problem.yaml": entry(
        directory / "problem.yaml")}}, "batches": {"v": 1, "files": {"exp1|b1": entry(batch)}},
        "sequence": {"exp1|b1": 1, "exp1|problem.yaml": 1}}
    plan = plan_tick(LandingZone(tmp_path / "landing"), catalog, json.dumps(old))
    assert plan.specs == [] and plan.batches == []  # nothing announced a second time
    assert json.loads(plan.cursor) == {"v": 2, "generation": 1}
