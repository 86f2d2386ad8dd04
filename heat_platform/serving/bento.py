"""Packaging champions for serving: BentoML models and bentos.

BentoML fixes its store location (BENTOML_HOME) the first time it is used in a process, so every
store operation runs in a fresh spawned worker with the platform's BENTOML_HOME: the same code
is then correct in a Dagster run, in the CLI and in a test suite with many platform homes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from heat_platform.names import bento_model_name
from heat_platform.paths import PROJECT_ROOT
from heat_platform.settings import PlatformSettings, export

BENTO_NAME = "heat_service"
SETTINGS_SOURCE = Path(__file__).resolve().parent.parent / "settings.py"


@dataclass(frozen=True)
class ServedModel:
    """A champion as the serving layer knows it: its TorchScript file and its lineage."""

    experiment: str
    torchscript: Path
    mlflow_model_name: str
    mlflow_model_version: str
    mlflow_run_id: str
    data_version: str
    dagster_run_id: str
    domain: dict[str, list[float]]
    kind: str = "pinn"  # "pinn" or "classical": every answer of the service says which

    @property
    def bento_model_name(self) -> str:
        return bento_model_name(self.experiment)

    @property
    def bento_model_version(self) -> str:
        # One BentoML model per MLflow model version; the run id keeps versions from different
        # registries (a fresh platform home) from colliding in a shared store.
        return f"v{self.mlflow_model_version}-{self.mlflow_run_id[:12]}".lower()

    @property
    def tag(self) -> str:
        return f"{self.bento_model_name}:{self.bento_model_version}"

    def labels(self) -> dict[str, str]:
        return {
            "experiment": self.experiment,
            "mlflow_model_version": self.mlflow_model_version,
            "mlflow_run_id": self.mlflow_run_id,
            "data_version": self.data_version[:63],
            "dagster_run_id": self.dagster_run_id,
            "kind": self.kind,
        }

    def metadata(self) -> dict[str, Any]:
        return {**self.labels(), "mlflow_model_name": self.mlflow_model_name,
                "data_version": self.data_version, "domain": self.domain}


def import_models(bentoml_home: Path, models: list[ServedModel]) -> list[str]:
    """Save each model into the BentoML store (idempotent); returns their tags."""
    return _in_store(bentoml_home, _import_models, models)


def build_bento(bentoml_home: Path, models: list[ServedModel], default: str, version: str) -> str:
    """Build the heat service bento serving ``models`` (imported first); returns the bento tag."""
    import_models(bentoml_home, models)
    return _in_store(bentoml_home, _build, [m.tag for m in models],
                     {m.experiment: m.tag for m in models}, default, version)


def list_bentos(bentoml_home: Path) -> list[str]:
    return _in_store(bentoml_home, _list_bentos)


def _in_store(bentoml_home: Path, function, *args):
    environment = {"BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "True"}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_set_environment,
                             initargs=(environment,)) as worker:
        return worker.submit(function, *args).result()


def _set_environment(environment: dict[str, str]) -> None:
    export(**environment)


def _import_models(models: list[ServedModel]) -> list[str]:
    import bentoml

    tags = []
    for model in models:
        try:
            bentoml.models.get(model.tag)
        except bentoml.exceptions.NotFound:
            with bentoml.models.create(model.tag, labels=model.labels(),
                                       metadata=model.metadata()) as saved:
                shutil.copyfile(model.torchscript, saved.path_of("model.pt"))
        tags.append(model.tag)
    return tags


def service_digest(source: Path | None = None) -> str:
    """The sha256 of what a bento is built from besides its models: every file of the
    service's source, the settings module copied into it and the pinned packages."""
    source = source or service_source()
    digest = hashlib.sha256()
    for path in sorted(_service_files(source)):
        digest.update(f"{path.relative_to(source).as_posix()}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    digest.update(SETTINGS_SOURCE.read_bytes() + b"\0")
    digest.update("\n".join(pinned_packages(source)).encode())
    return digest.hexdigest()


def pinned_packages(source: Path | None = None) -> list[str]:
    """The bento's Python packages (named in its bentofile.yaml), each pinned to the version
    this environment has: the one the smoke test runs the bento with."""
    from importlib.metadata import version

    bentofile = yaml.safe_load(((source or service_source()) / "bentofile.yaml").read_text())
    names = [re.split(r"[\s<>=!~;\[]", entry, maxsplit=1)[0]
             for entry in bentofile["python"]["packages"]]
    # a local build label (torch's +cpu) is not part of the pin: 2.13.0 matches 2.13.0+cpu
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def _service_files(source: Path) -> list[Path]:
    return [path for path in source.rglob("*") if path.is_file()
            and "__pycache__" not in path.parts and path.name != "served_models.json"]


def _build(model_tags: list[str], served: dict[str, str], default: str, version: str) -> str:
    import bentoml

    with tempfile.TemporaryDirectory(prefix="heat-bento-") as context:
        source = service_source()
        shutil.copytree(source, context, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "served_models.json"))
        # the service reads its settings through the platform's own definitions
        shutil.copyfile(SETTINGS_SOURCE, Path(context, "heat_settings.py"))
        bentofile = yaml.safe_load(Path(context, "bentofile.yaml").read_text())
        bentofile["python"]["packages"] = pinned_packages(source)
        Path(context, "bentofile.yaml").write_text(yaml.safe_dump(bentofile, sort_keys=False))
        manifest = {"default": default, "models": served}
        Path(context, "served_models.json").write_text(json.dumps(manifest, indent=2))
        try:
            return str(bentoml.bentos.get(f"{BENTO_NAME}:{version}").tag)
        except bentoml.exceptions.NotFound:
            pass
        bento = bentoml.bentos.build_bentofile(
            str(Path(context, "bentofile.yaml")), build_ctx=context, version=version,
            labels={"default_experiment": default},
        )
        return str(bento.tag)


def service_source() -> Path:
    """The BentoML service's source directory (``HEAT_PLATFORM_BENTO_SRC``, else this checkout's)."""
    return PlatformSettings.load().bento_src or PROJECT_ROOT / "bentos" / "heat_service"


def _list_bentos() -> list[str]:
    import bentoml

    return [str(bento.tag) for bento in bentoml.bentos.list(BENTO_NAME)]


def describe_bento(bentoml_home: Path, tag: str) -> dict[str, Any] | None:
    """What a bento of the store serves (None when the store has no such bento): its tag,
    creation time and default experiment, and per experiment the BentoML model with its
    lineage metadata and the path of its TorchScript file."""
    return _in_store(bentoml_home, _describe_bento, tag)


def _describe_bento(tag: str) -> dict[str, Any] | None:
    import bentoml

    try:
        bento = bentoml.bentos.get(tag)
    except (bentoml.exceptions.NotFound, bentoml.exceptions.BentoMLException):
        return None
    manifest = json.loads(Path(bento.path, "src", "served_models.json").read_text())
    models = {}
    for experiment, model_tag in manifest["models"].items():
        model = bentoml.models.get(model_tag)
        models[experiment] = {"tag": str(model.tag), "file": model.path_of("model.pt"),
                              "metadata": dict(model.info.metadata)}
    return {"tag": str(bento.tag), "created": bento.info.creation_time.isoformat(),
            "default": manifest["default"], "models": models}
