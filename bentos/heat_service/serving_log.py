"""The serving log: a sample of requests written as JSON lines under the platform's storage.

Contract (read by the platform's drift monitoring): one file per server process and day,
``<HEAT_SERVING_LOG_DIR>/<YYYY-MM-DD>/requests-<pid>-<start>.jsonl``; each line is one request:
``ts`` (ISO UTC), ``request_id``, ``endpoint``, ``experiment``, ``model_version``,
``data_version``, ``n_points``, ``x``, ``y``, ``t``, ``value`` (u; a for /diffusivity),
``in_domain`` (lists, at most
``HEAT_SERVING_LOG_MAX_POINTS`` points per request, evenly subsampled) and ``latency_ms``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any


class ServingLog:
    def __init__(self, directory: str | None, sample_rate: float, max_points: int) -> None:
        self.directory = Path(directory) if directory else None
        self.sample_rate = sample_rate
        self.max_points = max_points
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._started = time.strftime("%Y%m%dT%H%M%S")
        if self.directory is not None:
            # Flushing from a thread keeps file I/O off the request path.
            threading.Thread(target=self._flush_forever, daemon=True).start()

    @classmethod
    def from_settings(cls, settings) -> ServingLog:
        """The log ``settings`` (heat_settings.ServingSettings) describe."""
        return cls(directory=settings.log_dir, sample_rate=settings.log_sample,
                   max_points=settings.log_max_points)

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
            self._lines.append(json.dumps(entry))

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if not lines or self.directory is None:
            return
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        target = self.directory / day / f"requests-{os.getpid()}-{self._started}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def _flush_forever(self) -> None:
        while True:
            time.sleep(1.0)
            with contextlib.suppress(OSError):  # a full or vanished disk must not stop serving
                self.flush()
