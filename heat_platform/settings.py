"""Every setting the platform reads from its environment, in one place, typed and documented.

Two groups, each a pydantic-settings class read from the process environment and, under it,
from a ``.env`` file in the working directory (``HEAT_PLATFORM_ENV_FILE`` names another file;
empty: none), the file ``dagster dev`` reads too:

* :class:`PlatformSettings` (``HEAT_PLATFORM_*``, plus MLflow's own ``MLFLOW_TRACKING_URI``):
  where the platform keeps its data and how the pipeline runs;
* :class:`ServingSettings` (``HEAT_SERVING_*``): the BentoML service. The bento build copies this
  file into the bento (as ``heat_settings.py``), so the service reads the same definitions; this
  module therefore imports nothing but pydantic and the standard library.

The README's configuration table is generated from these classes (``heat-platform settings
--markdown``) and a test keeps the two equal. Nothing else in the platform reads
``os.environ`` for its own settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE_VARIABLE = "HEAT_PLATFORM_ENV_FILE"


def env_file() -> str | None:
    """The dotenv file under the environment: ``$HEAT_PLATFORM_ENV_FILE``, else ``./.env``."""
    return os.environ.get(ENV_FILE_VARIABLE, ".env") or None


class PlatformSettings(BaseSettings):
    """The platform: storage, the catalog, MLflow, the pipeline's schedules and defaults."""

    model_config = SettingsConfigDict(env_prefix="HEAT_PLATFORM_", extra="ignore",
                                      env_ignore_empty=True, populate_by_name=True)

    home: Path = Field(default=Path("data"), description="Where the platform keeps everything "
                       "it writes (layout in heat_platform/paths.py); relative to the working "
                       "directory.")
    db_url: SecretStr | None = Field(default=None, description="SQLAlchemy URL of the catalog "
                                     "(batch versions, audit log, deployments); default "
                                     "`sqlite:///<home>/platform.db`. May carry a password.")
    mlflow_tracking_uri: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI"),
        description="MLflow tracking and registry store (MLflow's own variable); default "
        "`sqlite:///<home>/mlflow/mlflow.db`. May carry a password.")
    mlflow_ui_url: str = Field(default="http://127.0.0.1:5000", description="Base URL of the "
                               "MLflow UI in the links the Dagster UI shows (`make dev` serves "
                               "it there).")
    deployment: Literal["local", "kubernetes"] = Field(
        default="local", description="local: one process per run on this machine; kubernetes: "
        "one pod per step through dagster-k8s (see Scaling out).")
    sensor_interval: int = Field(default=10, description="Seconds between ticks of the "
                                 "landing-zone and drift-retrain sensors.")
    automation_interval: int = Field(default=15, description="Seconds between evaluations of "
                                     "declarative automation.")
    pinn_profile: str = Field(default="fast", description="PINN profile of runs nobody "
                              "configured (sensors, automation): fast, accurate, quick, smoke.")
    escalation: bool = Field(default=True, description="When the gate rejects a PINN for its "
                             "fit, train it once more with the stronger profile (0: never).")
    pinn_max_minutes: float | None = Field(default=None, description="Training budget of runs "
                                           "nobody configured, in minutes; default: the "
                                           "profile's.")
    require_approval: bool = Field(default=False, description="1: the gate's promotions wait "
                                   "for `heat-platform approve`.")
    retrain_cron: str | None = Field(default=None, description="Cron schedule of time-based "
                                     "retraining; off when unset.")
    serving_drift_cron: str = Field(default="0 3 * * *", description="Cron schedule of the "
                                    "serving-log drift check (default nightly at 03:00).")
    alert_webhook: SecretStr | None = Field(default=None, description="URL receiving JSON "
                                            "alerts (drift, gate rejections); off when unset. "
                                            "Often carries a token: never shown in logs or UI.")
    bento_src: Path | None = Field(default=None, description="Source of the BentoML service "
                                   "the bento is built from; default bentos/heat_service of "
                                   "this checkout.")
    sensor_hash_bytes: int = Field(default=2 * 1024**3, description="Bytes of landing files "
                                   "the landing-zone sensor hashes per tick at most (at least "
                                   "one file); the rest waits for the next tick.")
    sensor_new_batches: int = Field(default=100, description="Batch ingestion runs the "
                                    "landing-zone sensor requests per tick at most.")
    disk_reserve_bytes: int = Field(default=256 * 1024**2, description="Free space a landing "
                                    "copy must leave on the disk of the platform home (the "
                                    "catalog, MLflow and Dagster write there too).")

    @classmethod
    def load(cls) -> PlatformSettings:
        """The settings of the current environment (read anew on each call)."""
        return cls(_env_file=env_file())


class ServingSettings(BaseSettings):
    """The BentoML service (`bentoml serve`, `heat-platform serve`)."""

    model_config = SettingsConfigDict(env_prefix="HEAT_SERVING_", extra="ignore",
                                      env_ignore_empty=True)

    api_key: SecretStr | None = Field(default=None, description="API key required on every "
                                      "endpoint but /livez, /readyz and /metrics (`X-API-Key` "
                                      "or `Authorization: Bearer`); off when unset.")
    max_points: int = Field(default=10000, description="Points a request may carry at most.")
    workers: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 4),
                         description="Front workers (default one per core, at most 4).")
    model_workers: int = Field(default=1, description="Adaptive-batching model workers.")
    direct_max_points: int = Field(default=2048, description="Requests up to this many points "
                                   "are answered in the front worker; larger ones go to the "
                                   "batching model worker.")
    torch_threads: int = Field(default=1, description="torch threads per worker.")
    access_log: bool = Field(default=True, description="BentoML's per-request access log.")
    tracing: bool = Field(default=False, description="BentoML's OpenTelemetry spans (~10 % of "
                          "a small request's CPU; export them with BENTOML_CONFIG).")
    gc_freeze: bool = Field(default=True, description="Freeze what a worker holds after "
                            "startup out of the garbage collector's reach (no ~160 ms full "
                            "collections under load).")
    direct_json: bool = Field(default=True, description="Answer JSON POST /predict requests "
                              "that validate in a direct route in front of BentoML's.")
    log_dir: Path | None = Field(default=None, description="Where sampled requests are logged "
                                 "for drift monitoring (`heat-platform serve`: "
                                 "<home>/serving/log); off when unset.")
    log_sample: float = Field(default=0.25, description="Share of requests logged.")
    log_max_points: int = Field(default=64, description="Points logged per request at most.")
    log_file_bytes: int = Field(default=64 * 2**20, description="Size at which a file of the "
                                "sampled serving log is closed and the next one started.")
    log_total_bytes: int = Field(default=2**30, description="Bytes the sampled serving log "
                                 "keeps at most; the oldest files are deleted first.")
    log_retention_days: float = Field(default=14.0, description="Files of the sampled serving "
                                      "log and server and proxy logs older than this are "
                                      "deleted.")
    server_log_bytes: int = Field(default=16 * 2**20, description="Size at which a `bentoml "
                                  "serve` or proxy log is rotated (two older copies kept).")
    max_body_bytes: int = Field(default=8 * 2**20, description="Bytes a request body may have "
                                "at most: 413 beyond, counted while it streams in (proxy and "
                                "service).")
    body_timeout: float = Field(default=10.0, description="Seconds a client may take to send a "
                                "request's headers and body: 408 after (proxy and service).")
    proxy_threads: int = Field(default=1, description="HAProxy threads of `heat-platform "
                               "serve`.")
    proxy_max_connections: int = Field(default=4096, description="Client connections "
                                       "`heat-platform serve` holds at most.")
    proxy_access_log: bool = Field(default=False, description="HAProxy's per-request log "
                                   "(<home>/serving/proxy/haproxy.log, rotated).")
    drain_timeout: float = Field(default=30.0, description="Seconds a replaced backend of "
                                 "`heat-platform serve` gets to finish its requests.")

    @classmethod
    def load(cls) -> ServingSettings:
        return cls(_env_file=env_file())

    def environment(self) -> dict[str, str]:
        """What was set (in the environment or the dotenv file) as the ``HEAT_SERVING_*``
        variables of a child process, e.g. the `bentoml serve` a server starts."""
        prefix = self.model_config["env_prefix"]
        out = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[f"{prefix}{name}".upper()] = str(value)
        return out


# Switches of the libraries the platform uses, set before any of them is imported anywhere in
# the process (Dagster run workers, the CLI, tests): DeepXDE picks its backend at import (and
# writes ~/.deepxde when none is named), BentoML reads its home at import, and no machine here
# reaches the internet, so telemetry stays off. Not settings: the platform needs these values.
LIBRARY_DEFAULTS = {"DDE_BACKEND": "pytorch", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "BENTOML_DO_NOT_TRACK": "True", "DO_NOT_TRACK": "1"}


def apply_library_defaults(home: Path) -> None:
    """Set :data:`LIBRARY_DEFAULTS` and BentoML's home (``<home>/bentoml``) in this process's
    environment, where not set already."""
    for name, value in {**LIBRARY_DEFAULTS, "BENTOML_HOME": str(home / "bentoml")}.items():
        os.environ.setdefault(name, value)


def export(**variables: str) -> None:
    """Set variables in this process's environment, for the child processes it starts (the
    Dagster daemon, run workers, `bentoml serve`) and the libraries it calls."""
    os.environ.update(variables)


def export_dotenv() -> None:
    """Put the dotenv file's variables into this process's environment (where not set already),
    so that the processes it starts (the Dagster daemon, its run workers, `bentoml serve`) see
    them, as those `dagster dev` starts do, and ``dg.EnvVar`` resolves them."""
    from dotenv import dotenv_values

    path = env_file()
    if path and Path(path).is_file():
        for name, value in dotenv_values(path).items():
            if value is not None:
                os.environ.setdefault(name, value)


# What a serving process (`bentoml serve`) takes from this process's environment: the system's
# basics and BentoML's own configuration file, nothing else (no database URL, no webhook, no
# cloud credentials); its HEAT_SERVING_* variables come from the resolved settings.
SERVING_BASICS = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                  "BENTOML_CONFIG")


def system_environment(**variables: str) -> dict[str, str]:
    """:data:`SERVING_BASICS` from this process's environment, then ``variables``: the whole
    environment of a child that needs nothing of the platform's (the serving proxy)."""
    return {**{name: os.environ[name] for name in SERVING_BASICS if name in os.environ},
            **variables}


def serving_environment(settings: ServingSettings, **variables: str) -> dict[str, str]:
    """The whole environment of a serving process: :data:`SERVING_BASICS` from this one, the
    library switches, ``settings`` as ``HEAT_SERVING_*`` variables, then ``variables``. It reads
    no dotenv file itself (``HEAT_PLATFORM_ENV_FILE`` empty): ``settings`` already hold it."""
    return system_environment(**LIBRARY_DEFAULTS, **{ENV_FILE_VARIABLE: ""},
                              **settings.environment(), **variables)


def child_environment(**variables: str) -> dict[str, str]:
    """This process's environment with ``variables`` added: a child process's environment."""
    return {**os.environ, **variables}


def variables(settings_class: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, description) of every field of a settings class."""
    prefix = settings_class.model_config.get("env_prefix", "")
    rows = []
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"{prefix}{name}"
        if field.default_factory is not None:
            default = "computed"
        elif field.default is None:
            default = "unset"
        elif isinstance(field.default, bool):
            default = "1" if field.default else "0"
        else:
            default = str(field.default)
        rows.append((variable.upper(), default, field.description or ""))
    return rows


def markdown_table() -> str:
    """The README's configuration table (``heat-platform settings --markdown``)."""
    rows = [(ENV_FILE_VARIABLE, ".env", "The dotenv file read under the environment (empty: "
             "none)."), *variables(PlatformSettings), *variables(ServingSettings)]
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{variable}` | {default if default in ('unset', 'computed') else f'`{default}`'}"
              f" | {meaning} |" for variable, default, meaning in rows]
    return "\n".join(lines)
