"""The platform's own immutable, content-addressed storage.

Layout (the only module that knows it)::

    <store>/sha256/<first two hex digits>/<sha256>.<ext>    one blob per distinct content
    <store>/tmp/                                           partial writes, same filesystem

A blob's name is the sha256 of its bytes, so a blob can never change without its name
changing: a file rewritten under the same name in the landing zone becomes a new blob and the
old one stays, which is what makes every catalog version retrievable. Blobs are written to a
temporary file, fsynced, then linked into place atomically (``os.link`` fails if the target
exists, so concurrent writers of the same content cannot clobber each other) and made
read-only. Storing the same content twice is a no-op returning the same :class:`BlobRef`.

:meth:`ContentStore.put_file` copies and hashes in one pass, so what is stored is exactly what
was hashed; if the source's size or mtime changes during the copy, it raises
:class:`SourceChangedError` instead of storing a torn mixture of two versions (the sensor
retries once the file is stable).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from heat_platform.files import file_digest

COPY_CHUNK_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z0-9]{1,12}")


class StoreError(Exception):
    """A blob that cannot be stored or found as asked."""


class SourceChangedError(StoreError):
    """The source file changed while it was being copied; nothing was stored."""


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    path: Path
    size: int

    @property
    def ext(self) -> str:
        return self.path.suffix.lstrip(".")


class ContentStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"

    # -- addressing --

    def path_for(self, sha256: str, ext: str) -> Path:
        """Where the blob with this content and extension lives (whether or not it exists).
        Both parts are validated: no caller string reaches the filesystem unchecked."""
        return self._blobs / _check_sha(sha256)[:2] / f"{sha256}.{_check_ext(ext)}"

    def find(self, sha256: str) -> BlobRef | None:
        """The stored blob with this content, whatever its extension, or None."""
        folder = self._blobs / _check_sha(sha256)[:2]
        if not folder.is_dir():
            return None
        for path in sorted(folder.glob(f"{sha256}.*")):
            return BlobRef(sha256, path, path.stat().st_size)
        return None

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading by its sha256."""
        ref = self.find(sha256)
        if ref is None:
            raise StoreError(f"no blob {sha256} in {self.root}")
        return ref.path.open("rb")

    def verify(self, ref: BlobRef) -> bool:
        """Re-hash a blob: True if its bytes still match its name."""
        return file_digest(ref.path) == ref.sha256

    # -- writing --

    def put_file(
        self, src: str | os.PathLike[str] | BinaryIO, *, ext: str | None = None
    ) -> BlobRef:
        """Copy ``src`` (a path, or a binary file opened by e.g. ``LandingZone.open``) into the
        store while hashing it. ``ext`` defaults to the source file's extension."""
        if isinstance(src, str | os.PathLike):
            with open(src, "rb") as handle:
                return self.put_file(handle, ext=ext or Path(src).suffix.lstrip("."))
        if ext is None:
            name = getattr(src, "name", "")
            ext = Path(name).suffix.lstrip(".") if isinstance(name, str) else ""
        ext = _check_ext((ext or "bin").lower())
        before = os.fstat(src.fileno())
        digest = hashlib.sha256()
        size = 0
        with self._temp_file() as (tmp_path, out):
            while chunk := src.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            after = os.fstat(src.fileno())
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or (
                stat.S_ISREG(after.st_mode) and size != after.st_size
            ):
                raise SourceChangedError(
                    f"{getattr(src, 'name', 'source')} changed while it was being copied "
                    f"({before.st_size} -> {after.st_size} bytes); nothing stored"
                )
            out.flush()
            os.fsync(out.fileno())
            return self._commit(tmp_path, digest.hexdigest(), ext, size)

    def put_frame(self, frame: pl.DataFrame) -> BlobRef:
        """Store a table the platform derived (validated rows, quarantine) as a Parquet blob."""
        tmp_path = self._temp_path("parquet")
        try:
            frame.write_parquet(tmp_path)
            return self._commit_written(tmp_path, "parquet")
        finally:
            tmp_path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, ext: str) -> BlobRef:
        """Store a small derived document (a JSON report...)."""
        with self._temp_file() as (tmp_path, out):
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            return self._commit(
                tmp_path, hashlib.sha256(data).hexdigest(), _check_ext(ext), len(data)
            )

    # -- internals --

    def _temp_path(self, ext: str) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=f".{_check_ext(ext)}")
        os.close(fd)
        return Path(name)

    def _commit_written(self, tmp_path: Path, ext: str) -> BlobRef:
        with tmp_path.open("rb") as handle:
            os.fsync(handle.fileno())
            sha256 = file_digest(handle)
        return self._commit(tmp_path, sha256, ext, tmp_path.stat().st_size)

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".partial")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield path, out
        finally:
            path.unlink(missing_ok=True)

    def _commit(self, tmp_path: Path, sha256: str, ext: str, size: int) -> BlobRef:
        target = self.path_for(sha256, ext)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        try:
            os.link(tmp_path, target)  # atomic, and never replaces an existing blob
        except FileExistsError:
            existing = target.stat().st_size
            if existing != size:
                raise StoreError(
                    f"blob {target} exists with {existing} bytes, expected {size}: the store is "
                    "damaged; refusing to overwrite it"
                ) from None
        except OSError:
            # Filesystems without hard links: rename is still atomic, and a concurrent writer
            # can only put identical bytes there.
            if not target.exists():
                shutil.move(tmp_path, target)
        finally:
            tmp_path.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return BlobRef(sha256, target, size)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise StoreError(f"not a lower-case hex sha256: {sha256!r}")
    return sha256


def _check_ext(ext: str) -> str:
    ext = ext.lstrip(".")
    if not _EXT.fullmatch(ext):
        raise StoreError(f"unusable blob extension {ext!r}")
    return ext
