"""Landing zone: names, conflicts, in-flight files, path safety, stability and the hash cache."""

from __future__ import annotations

import errno
import json
import os
import unicodedata
from pathlib import Path

import pytest

from heat_platform.files import file_digest
from heat_platform.data.landing import (
    LandingError,
    LandingZone,
    batch_key,
    empty_state,
    fingerprint,
    observe,
    parse_batch_key,
    safe_join,
)


def make_experiment(landing: Path, name: str = "exp1") -> Path:
    directory = landing / name
    directory.mkdir(parents=True)
    (directory / "problem.yaml").write_text("name: test\n")
    return directory


def touch(path: Path, content: str = "x,y,t,u\n") -> Path:
    path.write_text(content)
    return path


def skipped_reasons(scan) -> dict[str, str]:
    return {s.path.name: s.reason for s in scan.skipped}


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    return root


def test_experiments_need_a_valid_name_and_a_problem_file(landing):
    make_experiment(landing, "exp1")
    make_experiment(landing, "bad name")
    (landing / "no_spec").mkdir()
    touch(landing / "stray.csv")
    (landing / ".hidden").mkdir()
    scan = LandingZone(landing).experiments()
    assert scan.experiments == ["exp1"]
    reasons = skipped_reasons(scan)
    assert "does not match" in reasons["bad name"]
    assert reasons["no_spec"] == "no problem.yaml in the experiment directory"
    assert "file at the landing root" in reasons["stray.csv"]
    assert reasons[".hidden"] == "hidden or in-flight entry ignored"


def test_batch_keys_accept_spaces_and_unicode_and_normalise_to_nfc(landing):
    directory = make_experiment(landing)
    touch(directory / "run 1.csv")
    decomposed = unicodedata.normalize("NFD", "mesure-été")
    touch(directory / f"{decomposed}.parquet")
    touch(directory / "a..b.CSV")
    scan = LandingZone(landing).batch_files("exp1")
    assert sorted(f.batch for f in scan.files) == ["a..b", "mesure-été", "run 1"]
    assert scan.skipped == []
    located = LandingZone(landing).locate("exp1", "mesure-été")  # found although NFD on disk
    assert located.path.name == f"{decomposed}.parquet" and located.ext == "parquet"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a|b.csv", "contains '|'"),
        ("a,b.csv", "contains ','"),
        ("a...b.csv", "contains '...'"),
        ("a[1].csv", "contains '['"),
        ("tab\there.csv", "control or invisible character U+0009"),
        ("rtl\u202eexe.csv", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("notes.txt", "unsupported file type '.txt'"),
        ("README", "unsupported file type (no extension)"),
    ],
)
def test_names_that_cannot_be_partition_keys_are_reported(landing, name, reason):
    directory = make_experiment(landing)
    touch(directory / name)
    scan = LandingZone(landing).batch_files("exp1")
    assert scan.files == []
    assert reason in skipped_reasons(scan)[name]


@pytest.mark.parametrize(
    "name", [".b1.csv", "b1.csv.tmp", "b1.part", "b1.csv.crdownload", "b1.csv~"]
)
def test_in_flight_files_are_ignored_but_reported(landing, name):
    directory = make_experiment(landing)
    touch(directory / name)
    scan = LandingZone(landing).batch_files("exp1")
    assert scan.files == []
    assert "in-flight" in skipped_reasons(scan)[name]


def test_same_stem_twice_is_a_conflict_and_neither_is_taken(landing):
    directory = make_experiment(landing)
    touch(directory / "b1.csv")
    touch(directory / "b1.parquet")
    touch(directory / "b2.csv")
    scan = LandingZone(landing).batch_files("exp1")
    assert [f.batch for f in scan.files] == ["b2"]
    reasons = skipped_reasons(scan)
    assert reasons["b1.csv"] == reasons["b1.parquet"]
    assert "conflict: batch 'b1' has several files (b1.csv, b1.parquet)" in reasons["b1.csv"]


def test_symlinks_leading_outside_the_landing_root_are_refused(landing, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    touch(outside / "passwd.csv", "x,y,t,u\n1,1,1,1\n")
    (outside / "problem.yaml").write_text("name: x\n")
    directory = make_experiment(landing)
    (directory / "escape.csv").symlink_to(outside / "passwd.csv")
    (directory / "inside.csv").symlink_to(directory / "problem.yaml")
    (landing / "linked_exp").symlink_to(outside)
    zone = LandingZone(landing)
    experiments = zone.experiments()
    assert experiments.experiments == ["exp1"]
    assert "symlink points outside the landing root" in skipped_reasons(experiments)["linked_exp"]
    scan = zone.batch_files("exp1")
    assert [f.batch for f in scan.files] == ["inside"]  # a link within the root is fine
    assert "symlink points outside the landing root" in skipped_reasons(scan)["escape.csv"]


def test_open_refuses_a_file_swapped_for_an_escaping_symlink(landing, tmp_path):
    directory = make_experiment(landing)
    target = touch(directory / "b1.csv")
    zone = LandingZone(landing)
    landing_file = zone.locate("exp1", "b1")
    outside = touch(tmp_path / "outside.csv", "secret")
    target.unlink()
    target.symlink_to(outside)  # swapped after discovery
    with pytest.raises(LandingError, match="outside the landing root"):
        zone.open(landing_file)


def test_fifo_is_not_read(landing):
    directory = make_experiment(landing)
    os.mkfifo(directory / "pipe.csv")
    scan = LandingZone(landing).batch_files("exp1")
    assert skipped_reasons(scan)["pipe.csv"] == "not a regular file"


def test_safe_join_refuses_dot_dot_and_absolute_parts(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert safe_join(root, "exp 1", "b é.csv") == root.resolve() / "exp 1" / "b é.csv"
    for parts in (("..",), ("../x",), ("/etc",), ("a", ".."), ("",)):
        with pytest.raises(LandingError):
            safe_join(root, *parts)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(LandingError, match="leads outside"):
        safe_join(root, "link", "x")


def test_experiment_names_with_dot_dot_never_reach_the_filesystem(landing):
    zone = LandingZone(landing)
    for name in ("..", "../etc", "a/b", "...x"):
        with pytest.raises(LandingError):
            zone.batch_files(name)
    with pytest.raises(LandingError):
        zone.locate("exp1", "../../etc/passwd")


def test_batch_keys_round_trip_and_refuse_bad_parts():
    assert parse_batch_key(batch_key("exp1", "run 1")) == ("exp1", "run 1")
    with pytest.raises(LandingError):
        batch_key("exp1", "a|b")
    with pytest.raises(LandingError):
        parse_batch_key("no-separator")


def test_file_is_ready_only_after_an_unchanged_observation(landing):
    directory = make_experiment(landing)
    path = touch(directory / "b1.csv", "x,y,t,u\n")
    zone = LandingZone(landing)
    now = 10**18

    first = observe(None, zone.scan().files, now_ns=now)
    assert first.ready == [] and "first seen" in first.pending[0].reason

    with path.open("a") as handle:  # still being written
        handle.write("1,2,3,4\n")
    os.utime(path, ns=(now, now + 1))
    second = observe(first.state, zone.scan().files, now_ns=now + 10**9)
    assert second.ready == [] and "changed" in second.pending[0].reason

    third = observe(second.state, zone.scan().files, now_ns=now + 2 * 10**9)
    assert [f.batch for f in third.ready] == ["b1"]
    json.dumps(third.state)  # the sensor cursor must stay JSON

    young = observe(second.state, zone.scan().files, now_ns=now + 2 * 10**9, min_age_s=5)
    assert young.ready == [] and "< 5" in young.pending[0].reason

    path.unlink()
    gone = observe(third.state, zone.scan().files, now_ns=now + 3 * 10**9)
    assert gone.vanished == ["exp1|b1"] and gone.state["files"] == {}


def test_observe_is_pure(landing):
    directory = make_experiment(landing)
    touch(directory / "b1.csv")
    files = LandingZone(landing).scan().files
    state = observe(None, files, now_ns=1).state
    snapshot = json.dumps(state, sort_keys=True)
    assert observe(state, files, now_ns=2) == observe(state, files, now_ns=2)
    assert json.dumps(state, sort_keys=True) == snapshot


def test_hash_cache_and_touched_but_unchanged_file(landing):
    directory = make_experiment(landing)
    path = touch(directory / "b1.csv", "x,y,t,u\n1,2,3,4\n")
    zone = LandingZone(landing)
    calls: list[Path] = []

    def hasher(landing_file) -> str:
        calls.append(landing_file.path)
        return zone.digest(landing_file)

    state = observe(empty_state(), zone.scan().files, now_ns=1).state
    seen = observe(state, zone.scan().files, now_ns=2)
    first = fingerprint(seen.state, seen.ready, hasher=hasher)
    assert [v.is_new for v in first.versions] == [True] and len(calls) == 1
    assert first.versions[0].sha256 == file_digest(path)

    seen = observe(first.state, zone.scan().files, now_ns=3)
    again = fingerprint(seen.state, seen.ready, hasher=hasher)
    assert [v.is_new for v in again.versions] == [False] and len(calls) == 1  # cached

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    state = observe(again.state, zone.scan().files, now_ns=4).state
    seen = observe(state, zone.scan().files, now_ns=5)
    touched = fingerprint(seen.state, seen.ready, hasher=hasher)
    assert len(calls) == 2  # re-hashed because mtime changed...
    assert [v.is_new for v in touched.versions] == [False]  # ...but recognised by its sha

    path.write_text("x,y,t,u\n1,2,3,5\n")  # rewritten: new content
    state = observe(touched.state, zone.scan().files, now_ns=6).state
    seen = observe(state, zone.scan().files, now_ns=7)
    rewritten = fingerprint(seen.state, seen.ready, hasher=hasher)
    assert [v.is_new for v in rewritten.versions] == [True]
    assert rewritten.versions[0].sha256 != first.versions[0].sha256


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"a" * 3_000_001)
    import hashlib

    assert file_digest(path) == hashlib.sha256(b"a" * 3_000_001).hexdigest()


# --- issue 24: the sensor's hash goes through the hardened open, and is bounded -------------


def _within(seconds: float, call):
    """Run ``call`` in a thread; its result, or fail if it has not returned after ``seconds``
    (a hang must fail the test, not freeze it)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still blocked after {seconds} s")
    finally:
        pool.shutdown(wait=False)


@pytest.mark.parametrize("swap", ["fifo", "dev-zero", "grown"])
def test_a_file_swapped_after_the_scan_cannot_hang_the_hash(landing, swap):
    directory = make_experiment(landing)
    path = touch(directory / "b1.csv", "x,y,t,u\n1,2,3,4\n")
    zone = LandingZone(landing)
    [landing_file] = zone.scan().files
    path.unlink()
    if swap == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif swap == "dev-zero":
        path.symlink_to("/dev/zero")  # endless bytes
    else:
        path.write_text("x,y,t,u\n" + "1,2,3,4\n" * 100_000)  # rewritten, bigger
    with pytest.raises(LandingError) as caught:
        _within(10, lambda: zone.digest(landing_file))
    expected = {"fifo": "not a regular file (a FIFO)",
                "dev-zero": "not a regular file (a character device)",
                "grown": "holds more than the 16 bytes"}[swap]
    assert expected in str(caught.value)
    state = observe(observe(None, [landing_file], now_ns=1).state, [landing_file], now_ns=2)
    prints = _within(10, lambda: fingerprint(state.state, state.ready, hasher=zone.digest))
    assert prints.versions == [] and expected in prints.errors[0].reason


def test_a_symlink_loop_is_reported_as_one(landing):
    directory = make_experiment(landing)
    (directory / "a.csv").symlink_to(directory / "b.csv")
    (directory / "b.csv").symlink_to(directory / "a.csv")
    (landing / "loop").symlink_to(landing / "loop")
    zone = LandingZone(landing)
    scan = zone.scan()
    reasons = skipped_reasons(scan)
    assert scan.files == []
    assert reasons["a.csv"] == reasons["b.csv"] == "symlink loop (it leads back to itself); refused"
    assert reasons["loop"] == "symlink loop (it leads back to itself); refused"


def test_a_link_swapped_while_it_is_resolved_is_refused_as_such(landing, monkeypatch):
    directory = make_experiment(landing)
    touch(directory / "real.csv")
    (directory / "link.csv").symlink_to(directory / "real.csv")

    realpath = os.path.realpath

    def swapped(path, *args, **kwargs):  # realpath saw a link, then readlink found a file
        if Path(path).name == "link.csv":
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        return realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", swapped)
    scan = LandingZone(landing).scan()
    assert [f.path.name for f in scan.files] == ["real.csv"]
    assert skipped_reasons(scan)["link.csv"] == ("changed while its symlink was being resolved; "
                                                 "refused")


def test_each_call_hashes_and_announces_a_bounded_amount(landing):
    directory = make_experiment(landing)
    for i in range(5):
        touch(directory / f"b{i}.csv", f"x,y,t,u\n{i:091d}\n")  # 100 bytes each
    zone = LandingZone(landing)
    files = zone.scan().files
    state = observe(None, files, now_ns=1).state
    hashed: list[str] = []

    def hasher(landing_file):
        hashed.append(landing_file.batch)
        return zone.digest(landing_file)

    announced: list[str] = []
    for expected_hashed, expected_new in ((2, ["b0", "b1"]), (2, ["b2", "b3"]), (1, ["b4"])):
        seen = observe(state, files, now_ns=2)
        before = len(hashed)
        prints = fingerprint(seen.state, seen.ready, hasher=hasher, max_hash_bytes=250)
        assert len(hashed) - before == expected_hashed
        assert [v.file.batch for v in prints.new] == expected_new
        announced += [v.file.batch for v in prints.new]
        state = prints.state
    assert announced == ["b0", "b1", "b2", "b3", "b4"]  # each exactly once

    # a file larger than the whole budget still gets its turn, alone
    seen = observe(observe(None, files, now_ns=1).state, files, now_ns=2)
    assert len(fingerprint(seen.state, seen.ready, hasher=hasher, max_hash_bytes=10).new) == 1

    # at most max_new announcements; the others wait, already hashed, unannounced
    prints = fingerprint(seen.state, seen.ready, hasher=hasher, max_new=2)
    assert [v.file.batch for v in prints.new] == ["b0", "b1"]
    assert [f.batch for f in prints.deferred] == ["b2", "b3", "b4"]
    again = fingerprint(prints.state, observe(prints.state, files, now_ns=3).ready,
                        hasher=hasher, max_new=2)
    assert [v.file.batch for v in again.new] == ["b2", "b3"]
