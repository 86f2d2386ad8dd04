"""The heat-platform code location: one Definitions object for the whole asset graph."""

import dagster as dg

from heat_platform.resources import build_resources

defs = dg.Definitions(
    resources=build_resources(),
)
