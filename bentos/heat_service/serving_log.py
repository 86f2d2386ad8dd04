"""The serving log: a sample of requests written as JSON lines under the platform's storage.

Contract (read by the platform's drift monitoring): files per server process and day,
``<HEAT_SERVING_LOG_DIR>/<YYYY-MM-DD>/requests-<host>-<pid>-<start>[-<n>].jsonl`` (a process
starts file ``-<n>`` once the current one holds ``HEAT_SERVING_LOG_FILE_BYTES``). The host name
keeps replicas apart on shared storage: pods of one Deployment run their workers under the same
pids and start in the same second, and only their host (the pod's name) differs. Each line is one
request: ``ts`` (ISO UTC), ``request_id``, ``endpoint``, ``experiment``, ``model_version``,
``data_version``, ``n_points``, ``x``, ``y``, ``t``, ``value`` (u; a for /diffusivity),
``in_domain`` (lists, at most ``HEAT_SERVING_LOG_MAX_POINTS`` points per request, evenly
subsampled) and ``latency_ms``.

The log is finite: files older than ``HEAT_SERVING_LOG_RETENTION_DAYS`` are deleted, and the
oldest ones too while all of them hold more than ``HEAT_SERVING_LOG_TOTAL_BYTES``. A write that
fails (a full disk) is logged as an error with what was lost and counted
(``heat_serving_log_dropped_total``); serving goes on, and so does memory stay bounded: at most
``MAX_PENDING`` lines wait for the disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("bentoml.heat_service.serving_log")
MAX_PENDING = 10_000
RETENTION_EVERY_S = 60.0


class ServingLog:
    def __init__(self, directory: str | None, sample_rate: float, max_points: int,
                 file_bytes: int = 64 * 2**20, total_bytes: int = 2**30,
                 retention_days: float = 14.0,
                 on_dropped: Callable[[int], None] | None = None,
                 background: bool = True) -> None:
        self.directory = Path(directory) if directory else None
        self.sample_rate = sample_rate
        self.max_points = max_points
        self.file_bytes = file_bytes
        self.total_bytes = total_bytes
        self.retention_s = retention_days * 86_400
        self.on_dropped = on_dropped
        self.dropped = 0
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._started = time.strftime("%Y%m%dT%H%M%S")
        self.writer = f"{_file_safe(socket.gethostname())}-{os.getpid()}"
        self._part = 0
        self._pruned_at = 0.0
        if self.directory is not None and background:
            # Flushing from a thread keeps file I/O off the request path.
            threading.Thread(target=self._flush_forever, daemon=True).start()

    @classmethod
    def from_settings(cls, settings, on_dropped: Callable[[int], None] | None = None
                      ) -> ServingLog:
        """The log ``settings`` (heat_settings.ServingSettings) describe."""
        return cls(directory=settings.log_dir, sample_rate=settings.log_sample,
                   max_points=settings.log_max_points, file_bytes=settings.log_file_bytes,
                   total_bytes=settings.log_total_bytes,
                   retention_days=settings.log_retention_days, on_dropped=on_dropped)

    def record(self, *, columns: dict[str, Any], **fields: Any) -> None:
        """Maybe log one request; ``columns`` are per-point arrays of equal length (only the
        sampled requests pay for turning them into JSON)."""
        if self.directory is None or random.random() >= self.sample_rate:
            return
        n = len(next(iter(columns.values())))
        step = max(1, -(-n // self.max_points))
        entry = {"ts": dt.datetime.now(dt.UTC).isoformat(), "n_points": n, **fields}
        entry.update({name: values[::step].tolist() for name, values in columns.items()})
        with self._lock:
            if len(self._lines) >= MAX_PENDING:
                self._drop(1)
                return
            self._lines.append(json.dumps(entry))

    def current_file(self) -> Path:
        """The file this process writes to now."""
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        part = f"-{self._part}" if self._part else ""
        return self.directory / day / f"requests-{self.writer}-{self._started}{part}.jsonl"

    def flush(self) -> None:
        """Write the pending lines; raises OSError (a full disk) with the lines kept pending."""
        with self._lock:
            lines = self._lines
        if not lines or self.directory is None:
            return
        target = self.current_file()
        while target.exists() and target.stat().st_size >= self.file_bytes:
            self._part += 1
            target = self.current_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        with self._lock:
            del self._lines[:len(lines)]

    def prune(self) -> list[Path]:
        """Delete files past the retention, then the oldest while the log is over its size."""
        if self.directory is None:
            return []
        files = []
        for path in self.directory.glob("*/requests-*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                files.append((info.st_mtime, info.st_size, path))
        files.sort()
        cutoff = time.time() - self.retention_s
        total = sum(size for _, size, _ in files)
        current = self.current_file()
        deleted = []
        for modified, size, path in files:
            if path == current or (modified >= cutoff and total <= self.total_bytes):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
            total -= size
        for day in self.directory.iterdir():
            with contextlib.suppress(OSError):
                day.rmdir()  # only when empty
        return deleted

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(1.0)
            self.flush_and_prune()

    def flush_and_prune(self) -> None:
        """What the background thread does every second: write the pending lines, and once a
        minute delete what the retention says; a failure is logged, counted and dropped."""
        try:
            self.flush()
            if time.monotonic() - self._pruned_at >= RETENTION_EVERY_S:
                self._pruned_at = time.monotonic()
                self.prune()
        except OSError as error:
            # Serving goes on; what could not be written is said, counted and dropped.
            with self._lock:
                lost, self._lines = len(self._lines), []
            self._drop(lost)
            reason = ("disk full" if error.errno == errno.ENOSPC
                      else error.strerror or type(error).__name__)
            logger.error("serving log: %s writing %s; %d sampled requests dropped (%d in "
                         "all so far)", reason, error.filename or self.directory, lost,
                         self.dropped)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", name)[:63] or "host"
