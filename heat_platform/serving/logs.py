"""Keeping the serving side's logs finite: rotate a child's log by size, delete old ones.

A child process (`bentoml serve`, HAProxy) writes its log through a descriptor it holds
(opened for appending), so its file is rotated by copy-and-truncate: the content moves to
``<name>.1`` (``.1`` to ``.2``, ...) and the file is emptied in place; the child's next write
lands at its start. Lines written between the copy and the truncation are lost, a few at most.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("heat_platform.serving")
DAY_S = 86_400.0


def rotate(path: Path, max_bytes: int, keep: int = 2) -> bool:
    """Copy-truncate ``path`` once it holds more than ``max_bytes``, keeping ``keep`` older
    copies; whether it was rotated. Errors (a full disk) are raised, not swallowed."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    if keep > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as handle:
        handle.truncate(0)
    return True


def prune(directory: Path, patterns: Iterable[str], max_age_s: float,
          keep: Iterable[Path] = ()) -> list[Path]:
    """Delete the files of ``directory`` matching ``patterns`` not modified for ``max_age_s``
    seconds (except ``keep``); returns those deleted."""
    keep = {Path(path).resolve() for path in keep}
    cutoff = time.time() - max_age_s
    deleted = []
    for pattern in patterns:
        for path in directory.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                if path.resolve() not in keep and path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted.append(path)
    if deleted:
        log.info("deleted %d log files older than %.1f days in %s", len(deleted),
                 max_age_s / DAY_S, directory)
    return deleted
