"""Content store: exact, atomic, read-only, idempotent; rewrites become new blobs."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import numpy as np
import polars as pl
import pytest

from heat_platform.data.store import (
    ContentStore,
    DiskFullError,
    SourceChangedError,
    StoreError,
    TooLargeError,
)


def test_put_file_stores_exactly_what_it_hashed(tmp_path):
    src = tmp_path / "b1.csv"
    src.write_bytes(b"x,y,t,u\n1,2,3,4\n")
    store = ContentStore(tmp_path / "store")
    blob = store.put_file(src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert blob.sha256 == sha and blob.size == src.stat().st_size
    assert blob.path == store.root / "sha256" / sha[:2] / f"{sha}.csv"
    assert blob.path.read_bytes() == src.read_bytes()
    assert not blob.path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert store.verify(blob)
    assert list((store.root / "tmp").iterdir()) == []  # no partial files left behind


def test_put_is_idempotent(tmp_path):
    src = tmp_path / "b1.parquet"
    src.write_bytes(b"PAR1 same bytes PAR1")
    store = ContentStore(tmp_path / "store")
    assert store.put_file(src) == store.put_file(src)
    assert len(list((store.root / "sha256").rglob("*.parquet"))) == 1


def test_rewritten_file_is_a_new_blob_and_the_old_one_stays(tmp_path):
    src = tmp_path / "b1.csv"
    store = ContentStore(tmp_path / "store")
    src.write_text("version 1")
    old = store.put_file(src)
    src.write_text("version 2")
    new = store.put_file(src)
    assert old.sha256 != new.sha256
    with store.open(old.sha256) as handle:
        assert handle.read() == b"version 1"
    with store.open(new.sha256) as handle:
        assert handle.read() == b"version 2"


def test_a_source_changing_during_the_copy_is_not_stored(tmp_path):
    src = tmp_path / "b1.csv"
    src.write_bytes(b"a" * 100)

    class Growing(io.FileIO):
        """Appends to the file after the first read, like a writer that is not finished."""

        appended = False

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            if not self.appended:
                self.appended = True
                with open(src, "ab") as handle:
                    handle.write(b"more")
                os.utime(src, ns=(0, 10**9))
            return data

    store = ContentStore(tmp_path / "store")
    with Growing(src, "r") as handle, pytest.raises(SourceChangedError, match="nothing stored"):
        store.put_file(handle, ext="csv")
    assert not (store.root / "sha256").exists() or not any((store.root / "sha256").rglob("*.csv"))


def test_a_damaged_existing_blob_is_not_overwritten(tmp_path):
    src = tmp_path / "b1.csv"
    src.write_text("content")
    store = ContentStore(tmp_path / "store")
    blob = store.put_file(src)
    os.chmod(blob.path, 0o644)
    blob.path.write_text("truncated")  # someone damaged the store
    with pytest.raises(StoreError, match="damaged"):
        store.put_file(src)


def test_paths_are_built_only_from_validated_parts(tmp_path):
    store = ContentStore(tmp_path / "store")
    with pytest.raises(StoreError):
        store.path_for("../../etc/passwd", "csv")
    with pytest.raises(StoreError):
        store.path_for("a" * 64, "csv/../../x")
    assert store.find("b" * 64) is None


def test_put_frame_stores_a_derived_table(tmp_path):
    store = ContentStore(tmp_path / "store")
    frame = pl.DataFrame({"a": [1, 2]})
    blob = store.put_frame(frame)
    assert blob.ext == "parquet" and pl.read_parquet(blob.path).equals(frame)
    assert store.verify(blob)


# --- issue 24: bounded copies, announced content only, a full disk said plainly -------------


def test_a_copy_stops_at_its_limit_even_from_an_endless_source(tmp_path):
    store = ContentStore(tmp_path / "store", reserve_bytes=0)
    with open("/dev/zero", "rb") as endless, pytest.raises(TooLargeError, match="grew past"):
        store.put_file(endless, ext="csv", max_bytes=1024**2)
    assert list((store.root / "tmp").iterdir()) == []
    big = tmp_path / "big.csv"
    big.write_bytes(b"1" * 5000)
    with pytest.raises(TooLargeError, match="5000 bytes, above the limit of 4096"):
        store.put_file(big, max_bytes=4096)  # refused from its size, before reading
    assert not (store.root / "sha256").exists()


def test_bytes_other_than_the_announced_ones_are_not_stored(tmp_path):
    src = tmp_path / "b1.csv"
    src.write_text("version 2")
    store = ContentStore(tmp_path / "store", reserve_bytes=0)
    announced = hashlib.sha256(b"version 1").hexdigest()
    with pytest.raises(SourceChangedError, match="changed after it was hashed"):
        store.put_file(src, expected_sha256=announced)
    assert not (store.root / "sha256").exists() and list((store.root / "tmp").iterdir()) == []
    assert store.put_file(src, expected_sha256=hashlib.sha256(b"version 2").hexdigest()).size == 9


def test_a_copy_that_would_eat_the_reserve_is_refused_before_it_starts(tmp_path):
    from heat_platform.data.store import free_bytes

    # a sparse 1 GiB source (its size counts, it takes no disk) and a reserve that the disk
    # holds now but the copy would eat into: the other test worker writing or deleting files
    # meanwhile (hundreds of MiB would be needed) does not change the outcome, as it did when
    # the reserve was the free space and the source 1000 bytes
    src = tmp_path / "b1.csv"
    size = 2**30
    with open(src, "wb") as handle:
        handle.truncate(size)
    store = ContentStore(tmp_path / "store", reserve_bytes=free_bytes(tmp_path) - size // 2)
    with pytest.raises(DiskFullError, match="must stay free for the catalog, MLflow and Dagster"):
        store.put_file(src)
    assert list((store.root / "tmp").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs), so writes fail with the kernel's ENOSPC."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a 2 MiB tmpfs to fill a real disk here ({done.stderr.strip()});"
                    " CI runs as root, where it can")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_while_storing_a_landing_copy_is_a_clear_error(tmp_path, tiny_disk):
    store = ContentStore(tiny_disk / "store", reserve_bytes=0)
    # a source whose size says 0 and that never ends (like a file still being written) passes
    # the check before the copy: the write itself fills the disk and must fail clearly
    with open("/dev/zero", "rb") as endless, pytest.raises(DiskFullError) as caught:
        store.put_file(endless, ext="csv")
    assert "the disk is full: writing a copy of /dev/zero" in str(caught.value)
    assert "MiB free" in str(caught.value) and "HEAT_PLATFORM_HOME" in str(caught.value)
    assert list((store.root / "tmp").iterdir()) == []  # no partial file left behind
    src = tmp_path / "b1.csv"
    src.write_bytes(os.urandom(3 * 1024**2))  # more than the whole disk: refused up front
    with pytest.raises(DiskFullError, match="no room for a copy of"):
        store.put_file(src)


def test_a_full_disk_while_storing_a_training_set_is_a_clear_error(tiny_disk):
    from heat_platform.data.training_set import BatchInput, build_training_set, save_training_set
    from heat_platform_tests.data.conftest import BOUNDS, clean_frame

    rng_rows = clean_frame(60_000, n_sensors=400).with_columns(
        pl.Series("u", np.random.default_rng(0).normal(20, 1, 60_000)))
    training = build_training_set([BatchInput("b1", "a" * 64, rng_rows.with_row_index(
        "row", offset=1).with_columns(pl.col("row").cast(pl.Int64)))], BOUNDS)
    (tiny_disk / "filler").write_bytes(b"\0" * (1536 * 1024))  # the disk is nearly full
    with pytest.raises(DiskFullError, match="the disk is full: writing the training set"):
        save_training_set(training, tiny_disk / "training_sets" / "exp1" / training.data_version)
    assert not (tiny_disk / "training_sets" / "exp1" / training.data_version / "manifest.json"
                ).exists()
