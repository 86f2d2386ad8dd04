"""heat-platform: an operated pipeline for physics-informed inverse heat problems."""

import os

from heat_platform.paths import default_home

__version__ = "0.1.0"

# Set before any of these libraries is imported anywhere in the process (Dagster run workers,
# the CLI, tests): DeepXDE picks its backend at import, BentoML reads its home at import, and no
# machine here reaches the internet, so telemetry stays off.
os.environ.setdefault("DDE_BACKEND", "pytorch")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_HOME", str(default_home() / "bentoml"))
