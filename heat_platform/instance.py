"""The local Dagster instance: DAGSTER_HOME under the platform's home, SQLite storage.

`heat-platform init` (and every command that needs the instance) prepares it idempotently, so
`make demo`, `make dev` and the tests all see the same instance layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from heat_platform.paths import PROJECT_ROOT, PlatformPaths
from heat_platform.settings import export, export_dotenv

INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"


def prepare_instance(paths: PlatformPaths, instance_config: Path = INSTANCE_CONFIG) -> Path:
    """Create the platform directories and DAGSTER_HOME with its dagster.yaml; returns DAGSTER_HOME.

    Sets DAGSTER_HOME and HEAT_PLATFORM_HOME, and the variables of the dotenv file, in this
    process's environment so that child processes (the daemon, run workers, `bentoml serve`)
    see the same platform and settings.
    """
    paths.ensure()
    target = paths.dagster_home / "dagster.yaml"
    if instance_config.exists() and (
        not target.exists() or target.read_bytes() != instance_config.read_bytes()
    ):
        shutil.copyfile(instance_config, target)
    export_dotenv()
    export(HEAT_PLATFORM_HOME=str(paths.home), DAGSTER_HOME=str(paths.dagster_home))
    return paths.dagster_home
