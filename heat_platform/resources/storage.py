"""The platform's storage as a Dagster resource: landing zone, content store, catalog, reports."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from heat_platform.data.catalog import Catalog
from heat_platform.data.landing import LandingZone
from heat_platform.data.store import ContentStore
from heat_platform.data.validation import ValidationRules
from heat_platform.heat.spec import ProblemSpec
from heat_platform.paths import PlatformPaths


class PlatformStorage(dg.ConfigurableResource):
    """Everything under the platform home (HEAT_PLATFORM_HOME); layout in heat_platform.paths.

    On Kubernetes the home is a volume shared by the run pods; the catalog can move to Postgres
    with HEAT_PLATFORM_DB_URL.
    """

    home: str = Field(description="Platform home directory (HEAT_PLATFORM_HOME).")
    catalog_url: str = Field(default="", description="SQLAlchemy URL of the catalog "
                             "(HEAT_PLATFORM_DB_URL); empty: SQLite under the home.")
    max_file_bytes: int = Field(default=4 * 1024**3,
                                description="Landing files larger than this are refused.")
    max_rows: int = Field(default=20_000_000,
                          description="Batches with more rows are refused (memory grows with rows).")

    @property
    def paths(self) -> PlatformPaths:
        return PlatformPaths(Path(self.home))

    def landing(self) -> LandingZone:
        return LandingZone(self.paths.landing)

    def store(self) -> ContentStore:
        return ContentStore(self.paths.blobs)

    def catalog(self) -> Catalog:
        return Catalog(self.catalog_url or self.paths.catalog_url)

    def rules(self, spec: ProblemSpec | None = None, **overrides) -> ValidationRules:
        """Validation rules: the spec's physical range, these limits, then ``overrides``."""
        return ValidationRules.from_spec(spec, max_file_bytes=self.max_file_bytes,
                                         max_rows=self.max_rows, **overrides)

    def report_dir(self, *parts: str) -> Path:
        """A directory for human-readable reports; parts are validated names (partition keys)."""
        directory = self.paths.reports.joinpath(*parts)
        if not directory.resolve().is_relative_to(self.paths.reports.resolve()):
            raise ValueError(f"report path {directory} leaves the reports directory")
        directory.mkdir(parents=True, exist_ok=True)
        return directory
