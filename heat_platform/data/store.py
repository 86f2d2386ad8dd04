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
was hashed; if the source's size or mtime changes during the copy, or its bytes are not the ones
the caller expected (the sensor's sha256), it raises :class:`SourceChangedError` instead of
storing a torn mixture of two versions or a version nobody announced (the sensor retries once
the file is stable). A copy is bounded: it stops at ``max_bytes``, and it is refused before it
starts when it would leave less than ``reserve_bytes`` free on the disk, which also holds the
catalog, MLflow and Dagster's storage. A full disk while writing is a :class:`DiskFullError`
naming the store and the free space, not a bare ``OSError``, and leaves no partial file.
"""

from __future__ import annotations

import contextlib
import errno
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
from heat_platform.settings import PlatformSettings

COPY_CHUNK_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[a-z0-9]{1,12}")


class StoreError(Exception):
    """A blob that cannot be stored or found as asked."""


class SourceChangedError(StoreError):
    """The source file changed while it was being copied, or holds other bytes than the caller
    expected; nothing was stored."""


class DiskFullError(StoreError):
    """The store's disk has no room for a write (or would keep less than the reserve)."""


class TooLargeError(StoreError):
    """The source holds more bytes than the copy may take; nothing was stored."""


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    path: Path
    size: int

    @property
    def ext(self) -> str:
        return self.path.suffix.lstrip(".")


class ContentStore:
    def __init__(self, root: str | os.PathLike[str], *, reserve_bytes: int | None = None) -> None:
        """``reserve_bytes``: free space a copy must leave on the store's disk (Dagster's event
        log, the catalog and MLflow share it on one machine); default
        ``HEAT_PLATFORM_DISK_RESERVE_BYTES``."""
        self.root = Path(os.path.realpath(root))
        if reserve_bytes is None:
            reserve_bytes = PlatformSettings.load().disk_reserve_bytes
        self.reserve_bytes = reserve_bytes
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
        self, src: str | os.PathLike[str] | BinaryIO, *, ext: str | None = None,
        max_bytes: int | None = None, expected_sha256: str | None = None,
    ) -> BlobRef:
        """Copy ``src`` (a path, or a binary file opened by e.g. ``LandingZone.open``) into the
        store while hashing it. ``ext`` defaults to the source file's extension. More than
        ``max_bytes`` bytes is a :class:`TooLargeError` (the copy stops there); other bytes than
        ``expected_sha256`` a :class:`SourceChangedError`; either way nothing is stored."""
        if isinstance(src, str | os.PathLike):
            with open(src, "rb") as handle:
                return self.put_file(handle, ext=ext or Path(src).suffix.lstrip("."),
                                     max_bytes=max_bytes, expected_sha256=expected_sha256)
        name = getattr(src, "name", "source")
        if ext is None:
            ext = Path(name).suffix.lstrip(".") if isinstance(name, str) else ""
        ext = _check_ext((ext or "bin").lower())
        before = os.fstat(src.fileno())
        if max_bytes is not None and before.st_size > max_bytes:
            raise TooLargeError(f"{name} is {before.st_size} bytes, above the limit of "
                                f"{max_bytes}; nothing stored")
        self._ensure_room(before.st_size, f"a copy of {name}")
        digest = hashlib.sha256()
        size = 0
        limit = max_bytes if max_bytes is not None else float("inf")
        with self._temp_file() as (tmp_path, out):
            # never more than the limit + 1 bytes: a file growing without end stops here
            while chunk := src.read(int(min(COPY_CHUNK_BYTES, limit + 1 - size))):
                digest.update(chunk)
                self._write(out, chunk, f"a copy of {name}")
                size += len(chunk)
                if size > limit:
                    raise TooLargeError(f"{name} grew past the limit of {max_bytes} bytes while "
                                        "it was being copied; nothing stored")
            after = os.fstat(src.fileno())
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or (
                stat.S_ISREG(after.st_mode) and size != after.st_size
            ):
                raise SourceChangedError(
                    f"{name} changed while it was being copied "
                    f"({before.st_size} -> {after.st_size} bytes); nothing stored"
                )
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise SourceChangedError(
                    f"{name} holds other bytes (sha256 {sha256[:12]}) than the version announced "
                    f"for ingestion ({expected_sha256[:12]}): it changed after it was hashed; "
                    "nothing stored (the new content gets its own run)"
                )
            self._sync(out, f"a copy of {name}")
            return self._commit(tmp_path, sha256, ext, size)

    def put_frame(self, frame: pl.DataFrame) -> BlobRef:
        """Store a table the platform derived (validated rows, quarantine) as a Parquet blob."""
        tmp_path = self._temp_path("parquet")
        try:
            with disk_full_as_error(tmp_path, "a derived table"):
                frame.write_parquet(tmp_path)
            return self._commit_written(tmp_path, "parquet")
        finally:
            tmp_path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, ext: str) -> BlobRef:
        """Store a small derived document (a JSON report...)."""
        with self._temp_file() as (tmp_path, out):
            self._write(out, data, "a derived document")
            self._sync(out, "a derived document")
            return self._commit(
                tmp_path, hashlib.sha256(data).hexdigest(), _check_ext(ext), len(data)
            )

    # -- internals --

    def _ensure_room(self, size: int, what: str) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        free = free_bytes(self._tmp)
        if size + self.reserve_bytes > free:
            raise DiskFullError(
                f"no room for {what} ({_mib(size)}) in {self.root}: {_mib(free)} free, and "
                f"{_mib(self.reserve_bytes)} must stay free for the catalog, MLflow and Dagster; "
                "free space on that disk or move HEAT_PLATFORM_HOME"
            )

    def _write(self, out: BinaryIO, data: bytes, what: str) -> None:
        with disk_full_as_error(self._tmp, what):
            out.write(data)

    def _sync(self, out: BinaryIO, what: str) -> None:
        with disk_full_as_error(self._tmp, what):
            out.flush()
            os.fsync(out.fileno())

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
        with disk_full_as_error(self._blobs, "a blob's directory"):
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


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still write on the filesystem holding ``path``."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) while writing ``what`` under ``path`` into a
    :class:`DiskFullError` that says where and how much room is left."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(_disk_full_message(path, what)) from error
    except Exception as error:  # polars reports a full disk as its own error type
        if "No space left on device" not in str(error) and "os error 28" not in str(error):
            raise
        raise DiskFullError(_disk_full_message(path, what)) from error


def _disk_full_message(path: str | os.PathLike[str], what: str) -> str:
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        free = _mib(free_bytes(directory))
    except OSError:
        free = "unknown"
    return (f"the disk is full: writing {what} in {directory} failed (no space left on device; "
            f"{free} free); nothing was stored. Free space on that disk or move "
            "HEAT_PLATFORM_HOME")


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


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
