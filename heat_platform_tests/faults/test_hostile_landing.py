"""A landing zone of hostile files, through the real landing-zone sensor and ingestion jobs.

Dropped together next to good batches: a FIFO, symlink loops (a file pair, a directory), a
symlink to /dev/zero, a Parquet decompression bomb (9 MB declaring 4.5 GB), a file rewritten
between the sensor's hash and the copy, a file swapped many times a second between a regular
file, a FIFO and a link to /dev/zero while the sensor ticks, and 10,000 tiny files in one drop
in another experiment. What must hold: every tick ends (far below Dagster's 60 s sensor
timeout), the good batches are ingested and validated, every bad file has a specific reason,
the bomb is refused without being decompressed, and each of the 10,000 is announced exactly
once, a bounded number per tick.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import dagster as dg
import numpy as np
import pytest

from heat_platform.assets import measurements, validation
from heat_platform.simulate import simulate_to_landing, write_problem

FLOOD = 10_000
PER_TICK = 500
SENSOR_TIMEOUT_S = 60  # Dagster's default limit on one sensor evaluation


def write_bomb(path) -> None:
    """A valid Parquet batch whose extra column is 4.5 GB of zeros compressed to ~9 MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, width = 100_000, 4096
    payload = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.zeros(n * width, np.uint8))])
    column = lambda value: pa.array(np.full(n, value))  # noqa: E731
    table = pa.table({"x": column(0.5), "y": column(0.5), "t": column(0.1), "u": column(0.0),
                      "payload": payload})
    with pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=False) as out:
        for _ in range(11):
            out.write_table(table)


class Swapper(threading.Thread):
    """Replaces ``victim`` again and again (atomic renames of hard links, so each kind keeps its
    inode and mtime) by a regular file, a FIFO and a symlink to /dev/zero."""

    def __init__(self, directory) -> None:
        super().__init__(daemon=True)
        self.victim = directory / "victim.csv"
        self.kinds = [directory / ".real", directory / ".fifo", directory / ".zero"]
        self.kinds[0].write_text("x,y,t,u\n0.5,0.5,0.1,0.2\n")
        os.mkfifo(self.kinds[1])
        self.kinds[2].symlink_to("/dev/zero")
        self.swaps, self.stopping = 0, threading.Event()

    def run(self) -> None:
        staged = self.victim.with_name(".victim.tmp")
        while not self.stopping.is_set():
            kind = self.kinds[self.swaps % 3]
            os.link(kind, staged, follow_symlinks=False)
            os.replace(staged, self.victim)
            self.swaps += 1
            time.sleep(0.0005)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_landing_zone_of_hostile_files(platform_paths, dagster_instance, resources, capsys,
                                         monkeypatch):
    monkeypatch.setenv("HEAT_PLATFORM_SENSOR_NEW_BATCHES", str(PER_TICK))
    landing = platform_paths.landing
    good = [simulate_to_landing(landing, "inclusion", seed=seed).stem for seed in (1, 2)]
    inclusion = landing / "inclusion"
    os.mkfifo(inclusion / "pipe.csv")
    (inclusion / "loop-a.csv").symlink_to(inclusion / "loop-b.csv")
    (inclusion / "loop-b.csv").symlink_to(inclusion / "loop-a.csv")
    (landing / "loop").symlink_to(landing / "loop")
    (inclusion / "zero.csv").symlink_to("/dev/zero")
    write_bomb(inclusion / "bomb.parquet")
    simulate_to_landing(landing, "inclusion", seed=5, batch="swapped")
    write_problem(landing, "inclusion", "flood")
    for i in range(FLOOD):
        (landing / "flood" / f"tiny{i:05d}.csv").write_text(f"x,y,t,u\n0.5,0.5,0.1,{i}\n")
    swapper = Swapper(inclusion)
    swapper.start()
    try:
        check_everything(platform_paths, dagster_instance, resources, capsys, swapper, good)
    finally:
        swapper.stopping.set()
        swapper.join()


def check_everything(platform_paths, dagster_instance, resources, capsys, swapper, good):
    """Tick until the flood is announced, run what must run, and check every outcome."""
    landing, storage = platform_paths.landing, resources["storage"]

    cursor, seconds, announced, ran = None, [], [], {}  # announced: (tick, request)

    def tick(execute=lambda request: True):
        nonlocal cursor
        context = dg.build_sensor_context(instance=dagster_instance, cursor=cursor,
                                          resources={"storage": storage})
        started = time.perf_counter()
        result = measurements.landing_zone_sensor(context)
        seconds.append(time.perf_counter() - started)
        cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            dagster_instance.add_dynamic_partitions(request.partitions_def_name,
                                                    list(request.partition_keys))
        for request in result.run_requests or []:
            announced.append((len(seconds), request))
            if execute(request):
                ran[request.run_key] = run(request)

    def run(request, jobs=None):
        jobs = jobs or {"ingest_problem_spec": [measurements.problem_spec],
                        "ingest_batch": [measurements.raw_measurements,
                                         validation.batch_validation]}[request.job_name]
        return dg.materialize(jobs, instance=dagster_instance,
                              partition_key=request.partition_key, resources=resources,
                              tags={**request.tags, "dagster/run_key": request.run_key},
                              raise_on_error=False)

    sample = {f"tiny{i:05d}" for i in range(3)}  # of the flood's runs, a few are run

    def inclusion_and_sample(request) -> bool:
        return experiment_of(request) == "inclusion" or batch_of(request) in sample

    tick()  # first seen
    tick()  # the specs (validation needs the domain)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the batches; the file "swapped" is rewritten between this announcement and its copy
    tick(lambda request: inclusion_and_sample(request) and batch_of(request) != "swapped")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [swapped] = [r for _, r in announced if batch_of(r) == "swapped"]
    simulate_to_landing(landing, "inclusion", seed=6, batch="swapped")
    ran[swapped.run_key] = run(swapped)
    while sum(experiment_of(r) == "flood" for _, r in announced) < FLOOD + 1:  # + its spec
        tick(lambda request: experiment_of(request) == "inclusion")
        assert len(seconds) < 40, "the flood is not announced in a bounded number of ticks"
    for _ in range(3):
        tick(lambda request: experiment_of(request) == "inclusion")
    swapper.stopping.set()
    swapper.join()
    logged = capsys.readouterr().err

    # every tick ended, far below the sensor timeout, while the victim kept changing kind
    assert max(seconds) < SENSOR_TIMEOUT_S / 4, seconds
    assert swapper.swaps > 1000

    # the good batches went through, announced in the first tick that announced batches,
    # although 10,000 files of another experiment landed with them
    catalog = storage.catalog()
    for batch in good:
        assert catalog.current_version("inclusion", batch).status == "validated"
        assert {t for t, r in announced if batch_of(r) == batch} == {3}

    # every bad file has a specific reason
    for name, reason in {"pipe.csv": "not a regular file",
                         "loop-a.csv": "symlink loop (it leads back to itself)",
                         "loop-b.csv": "symlink loop (it leads back to itself)",
                         "loop": "symlink loop (it leads back to itself)",
                         "zero.csv": "symlink points outside the landing root (/dev/zero)"}.items():
        assert f"/{name}: {reason}" in logged, name
    bomb = catalog.current_version("inclusion", "bomb")
    assert bomb.status == "rejected"
    assert "too_large: 'bomb.parquet' declares 4.2 GiB of uncompressed data" in bomb.message
    assert (rss_after - rss_before) * 1024 < 1024**3  # not decompressed: that is 4.5 GB

    # the swapped file: refused at the copy, then ingested once, as its new content
    failure = ran[swapped.run_key].get_step_failure_events()[0].step_failure_data
    assert "changed after it was hashed" in failure.user_failure_data.description
    [version] = catalog.history("inclusion", "swapped")
    assert version.status == "validated" and version.sha256 != swapped.tags["heat_platform/sha256"]

    # the victim: announced only as its regular self, and every refusal says why
    from heat_platform.files import file_digest

    for _, request in announced:
        if batch_of(request) == "victim":
            assert request.tags["heat_platform/sha256"] == file_digest(swapper.kinds[0])
    said = {line.split("victim.csv: ", 1)[1] for line in logged.splitlines()
            if "victim.csv: " in line}
    specific = ("not a regular file", "symlink points outside the landing root",
                "changed while being hashed", "size or mtime changed", "first seen",
                "changed while its symlink was being resolved")
    assert said and all(any(reason in line for reason in specific) for line in said), said

    # the flood: each of the 10,000 announced exactly once, at most PER_TICK a tick; the ones
    # that ran were rejected with a specific reason
    flood = [batch_of(r) for _, r in announced if experiment_of(r) == "flood" and batch_of(r)]
    assert len(flood) == len(set(flood)) == FLOOD
    per_tick = [sum(t == i and experiment_of(r) == "flood" for t, r in announced)
                for i in range(len(seconds) + 1)]
    assert max(per_tick) <= PER_TICK
    for batch in sample:
        version = catalog.current_version("flood", batch)
        assert version.status == "rejected"
        assert "only 1 valid rows, fewer than the minimum of 10" in version.message
    print(f"\nhostile landing zone: {len(seconds)} ticks, slowest {max(seconds):.2f} s, "
          f"{swapper.swaps} swaps of the victim, {len(announced)} runs requested, "
          f"peak RSS growth over the bomb's tick {(rss_after - rss_before) / 1024:.0f} MiB")


def batch_of(request) -> str | None:
    keys = getattr(request.partition_key, "keys_by_dimension", None)
    return keys["batch"] if keys else None


def experiment_of(request) -> str:
    keys = getattr(request.partition_key, "keys_by_dimension", None)
    return keys["experiment"] if keys else request.partition_key
