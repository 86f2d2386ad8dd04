"""Content store: exact, atomic, read-only, idempotent; rewrites become new blobs."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import polars as pl
import pytest

from heat_platform.data.store import ContentStore, SourceChangedError, StoreError


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
