"""The sampled serving log (bentos/heat_service/serving_log.py) stays finite and says when the
disk is full; the drift monitoring reads a bounded window of it."""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from heat_platform.monitoring.drift import read_serving_log
from heat_platform_tests.serving.service_code import service_module

serving_log = service_module("serving_log")


def log_of(directory, **options) -> serving_log.ServingLog:
    return serving_log.ServingLog(str(directory), sample_rate=1.0, max_points=64,
                                  background=False, **options)


def record(log, n: int = 1, experiment: str = "e", x: float = 0.5) -> None:
    for _ in range(n):
        log.record(columns={"x": np.full(10, x), "y": np.full(10, 0.5), "t": np.zeros(10),
                            "value": np.ones(10), "in_domain": np.ones(10, bool)},
                   request_id="r", endpoint="/predict", experiment=experiment,
                   model_version="1", data_version="d", latency_ms=1.0)


def test_files_are_rotated_by_size(tmp_path):
    log = log_of(tmp_path, file_bytes=4000)
    for _ in range(12):
        record(log, 5)
        log.flush()
    files = sorted(tmp_path.glob("*/requests-*.jsonl"))
    assert len(files) >= 3
    line = len((files[0]).read_text().splitlines()[0]) + 1
    assert all(path.stat().st_size < 4000 + 5 * line for path in files)  # one flush at most over
    assert sum(len(path.read_text().splitlines()) for path in files) == 60


def test_replicas_on_shared_storage_write_their_own_files(tmp_path, monkeypatch):
    """Two pods of one Deployment: the same worker pid, the same start second, one volume."""
    replicas = []
    for pod in ("heat-serving-7c9f-abcde", "heat-serving-7c9f-fghij"):
        monkeypatch.setattr(serving_log.socket, "gethostname", lambda pod=pod: pod)
        replicas.append(log := log_of(tmp_path))
        log._started = "20261206T070000"
    for index, log in enumerate(replicas):
        record(log, 3, experiment=f"from-{index}")
        log.flush()
    files = sorted(tmp_path.glob("*/requests-*.jsonl"))
    assert [path.name.split("-")[1] for path in files] == [
        "heat_serving_7c9f_abcde", "heat_serving_7c9f_fghij"]
    for index, path in enumerate(files):
        lines = path.read_text().splitlines()
        assert [json.loads(line)["experiment"] for line in lines] == [f"from-{index}"] * 3


def test_old_files_and_the_oldest_over_the_size_are_deleted(tmp_path):
    log = log_of(tmp_path, retention_days=1.0, total_bytes=10_000)
    old_day = tmp_path / "2026-01-01"
    old_day.mkdir()
    ancient = old_day / "requests-1-x.jsonl"
    ancient.write_text("{}\n")
    os.utime(ancient, (time.time() - 3 * 86_400,) * 2)
    recent = []
    for index in range(4):  # 4 files of 4 kB, oldest first, within the retention
        path = tmp_path / "2026-01-02" / f"requests-2-{index}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("x" * 4000 + "\n")
        os.utime(path, (time.time() - 3600 + index,) * 2)
        recent.append(path)
    record(log, 3)
    log.flush()
    deleted = log.prune()
    assert ancient in deleted and not old_day.exists()  # an empty day's folder goes too
    assert set(deleted) - {ancient} == set(recent[:2])  # the two oldest: 8 kB + current < 10 kB
    assert log.current_file().exists() and all(path.exists() for path in recent[2:])


def test_a_full_disk_is_an_error_that_says_so_and_serving_goes_on(tmp_path, caplog):
    dropped = []
    log = log_of(tmp_path, on_dropped=dropped.append)
    log.current_file().parent.mkdir(parents=True)
    log.current_file().symlink_to("/dev/full")  # every write: ENOSPC
    record(log, 7)
    with caplog.at_level(logging.ERROR, logger="bentoml.heat_service.serving_log"):
        log.flush_and_prune()
    (message,) = [r.getMessage() for r in caplog.records]
    assert "disk full" in message and "7 sampled requests dropped" in message
    assert dropped == [7] and log.dropped == 7
    record(log, 1)  # still sampling, nothing kept from before
    assert len(log._lines) == 1


def test_what_waits_for_the_disk_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(serving_log, "MAX_PENDING", 5)
    log = log_of(tmp_path)
    record(log, 8)
    assert len(log._lines) == 5 and log.dropped == 3


def test_drift_reads_a_bounded_window_newest_first(tmp_path):
    log = log_of(tmp_path, file_bytes=3000)
    for x in range(30):  # 30 requests of 10 points, x = their order, over several files
        record(log, 1, x=float(x))
        record(log, 1, experiment="other", x=99.0)
        log.flush()
    everything = read_serving_log(tmp_path, "e")
    assert everything["x"].to_list() == [float(x) for x in range(30) for _ in range(10)]
    newest = read_serving_log(tmp_path, "e", max_points=45)
    assert newest["x"].to_list() == [25.0] * 5 + [float(x) for x in range(26, 30)
                                                  for _ in range(10)]
    # files last written before the window are not opened at all
    for path in tmp_path.glob("*/requests-*.jsonl"):
        os.utime(path, (time.time() - 7200,) * 2)
    assert read_serving_log(tmp_path, "e", since_ts=time.time() - 3600).height == 0
    assert json.loads(next(tmp_path.glob("*/*.jsonl")).read_text().splitlines()[0])["ts"]
