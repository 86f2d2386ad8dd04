"""Platform-wide settings as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from heat_platform.paths import PlatformPaths


class PlatformSettings(dg.ConfigurableResource):
    """Where the platform lives; every path is derived from this home (see heat_platform.paths)."""

    home: str = Field(description="Platform home directory (HEAT_PLATFORM_HOME).")

    @property
    def paths(self) -> PlatformPaths:
        return PlatformPaths(Path(self.home))
