"""Small file chores every layer needs, written once: a file's digest and atomic writes.

The foundation of the package: it imports nothing of the platform, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def file_digest(path: str | Path | BinaryIO) -> str:
    """The sha256 of a file's bytes (a path, or an open binary file read from where it is)."""
    if isinstance(path, str | Path):
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    return hashlib.file_digest(path, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; flushed to disk, it replaces ``path`` in
    one step when the block ends without error (readers see the old file or the new one, never
    half of one), and is removed when the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(content.encode() if isinstance(content, str) else content)
    return Path(path)
