"""Shared fixtures for the data library's tests: a domain, clean measurements, file writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

BOUNDS = {"x": (0.0, 1.0), "y": (0.0, 2.0), "t": (0.0, 10.0)}


def clean_frame(
    n: int = 40, *, n_sensors: int = 8, seed: int = 0, sensor_prefix: str = "s"
) -> pl.DataFrame:
    """n measurements from n_sensors fixed sensors at distinct times: valid by construction."""
    rng = np.random.default_rng(seed)
    sensor = np.arange(n) % n_sensors
    xs = rng.uniform(0.05, 0.95, n_sensors)
    ys = rng.uniform(0.05, 1.95, n_sensors)
    return pl.DataFrame(
        {
            "x": xs[sensor],
            "y": ys[sensor],
            "t": np.arange(n) * (9.0 / n),
            "u": 20.0 + rng.normal(0.0, 1.0, n),
            "sigma": np.full(n, 0.1),
            "sensor_id": [f"{sensor_prefix}{i}" for i in sensor],
        }
    )


@pytest.fixture
def bounds() -> dict[str, tuple[float, float]]:
    return dict(BOUNDS)


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write
