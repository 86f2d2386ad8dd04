"""Resources shared by the assets: the same classes locally and on Kubernetes, only their
arguments differ (see :func:`build_resources`)."""

from __future__ import annotations

from typing import Any

from heat_platform.paths import PlatformPaths
from heat_platform.resources.settings import PlatformSettings


def build_resources(paths: PlatformPaths | None = None) -> dict[str, Any]:
    paths = paths or PlatformPaths.from_env()
    return {"settings": PlatformSettings(home=str(paths.home))}
