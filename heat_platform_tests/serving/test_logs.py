"""Server and proxy logs stay finite: rotated by size under a writer that keeps its descriptor,
deleted by age."""

from __future__ import annotations

import os
import time

from heat_platform.serving.logs import prune, rotate


def test_a_log_is_rotated_under_its_writer(tmp_path):
    path = tmp_path / "bentoml-1-2.log"
    # as a child's stdout: it appends through a descriptor of its own
    with open(path, "ab", buffering=0) as writer:
        writer.write(b"a" * 600)
        assert not rotate(path, max_bytes=1000)
        writer.write(b"b" * 600)
        assert rotate(path, max_bytes=1000, keep=2)
        assert path.stat().st_size == 0
        assert path.with_name(f"{path.name}.1").read_bytes() == b"a" * 600 + b"b" * 600
        writer.write(b"c" * 1100)  # the writer goes on, at the start of the emptied file
        assert path.read_bytes() == b"c" * 1100
        assert rotate(path, max_bytes=1000, keep=2)
        assert path.with_name(f"{path.name}.2").read_bytes().startswith(b"a")
        assert path.with_name(f"{path.name}.1").read_bytes() == b"c" * 1100
        writer.write(b"d" * 1100)
        assert rotate(path, max_bytes=1000, keep=2)  # the oldest copy goes
        assert path.with_name(f"{path.name}.2").read_bytes() == b"c" * 1100
        assert not path.with_name(f"{path.name}.3").exists()


def test_old_logs_are_deleted_but_those_in_use(tmp_path):
    old, in_use, recent = (tmp_path / f"bentoml-{n}.log" for n in (1, 2, 3))
    for path in (old, in_use, recent):
        path.write_text("x")
    for path in (old, in_use):
        os.utime(path, (time.time() - 3 * 86_400,) * 2)
    (tmp_path / "keep.txt").write_text("not a log")
    os.utime(tmp_path / "keep.txt", (time.time() - 3 * 86_400,) * 2)
    assert prune(tmp_path, ["bentoml-*.log"], max_age_s=86_400, keep=[in_use]) == [old]
    assert {p.name for p in tmp_path.iterdir()} == {in_use.name, recent.name, "keep.txt"}
