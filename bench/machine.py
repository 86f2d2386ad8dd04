"""What every benchmark records about the machine it ran on: CPU, versions, load over the run."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name (Linux): the same training can end elsewhere on another CPU, whose
    floating-point kernels round differently and so take L-BFGS along another path."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.partition(":")[2].strip() for line in lines
                 if line.startswith("model name")), None)


def versions(*packages: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info(load_before: tuple[float, float, float], packages: tuple[str, ...] = (),
                 **extra) -> dict:
    """The machine, the versions of ``packages`` and the load average before and after."""
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        **versions(*packages),
        **extra,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
