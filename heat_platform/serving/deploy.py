"""Deploying champions: one bento serving every experiment's champion, smoke-tested for real.

A deployment is: the champions imported into the BentoML store, a bento built around them
(``bentoml build``, no Docker), ``bentoml serve`` started on a free loopback port, /readyz
awaited, and a fixed set of points predicted over HTTP and compared with the MLflow registry's
own model; only then is it published as the desired deployment that ``heat-platform serve``
rolls out blue/green, and its Kubernetes manifest written.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heat_platform.models.candidates import Champion
from heat_platform.paths import PlatformPaths
from heat_platform.serving.bento import ServedModel, build_bento, service_digest
from heat_platform.serving.kubernetes import write_manifests
from heat_platform.serving.rollout import live_state_path, read_json, write_desired_deployment
from heat_platform.serving.server import BentoServer

SMOKE_POINTS = 64
MAX_DIFFERENCE = 1e-5  # u from the served bento vs the MLflow model, physical units


class SmokeTestFailed(RuntimeError):
    """The built bento did not start, or answered differently from the registry's model."""


@dataclass(frozen=True)
class SmokeTest:
    ready_after_s: float
    max_abs_difference: float
    latency_ms_p50: float
    latency_ms_max: float
    lineage: dict[str, str]


@dataclass(frozen=True)
class Deployment:
    bento: str
    models: list[ServedModel]
    smoke: SmokeTest
    manifest: Path
    served_url: str | None  # the stable `heat-platform serve` URL when it is running


def served_model(champion: Champion) -> ServedModel:
    return ServedModel(experiment=champion.experiment, torchscript=champion.artifact,
                       mlflow_model_name=champion.model_name,
                       mlflow_model_version=champion.version, mlflow_run_id=champion.run_id,
                       data_version=champion.data_version,
                       dagster_run_id=champion.training_dagster_run_id, domain=champion.domain,
                       kind=champion.kind)


def bento_version(models: list[ServedModel]) -> str:
    """Same champions, same service code and packages, same bento: the version is a hash of
    the served model tags and the service's source (a fix to the service ships without
    waiting for a new champion)."""
    text = ",".join(sorted(f"{m.experiment}={m.tag}" for m in models)) + service_digest()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def smoke_points(model: ServedModel, n: int = SMOKE_POINTS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(*model.domain[axis], n) for axis in ("x", "y", "t")])


def registry_prediction(registry, model: ServedModel, points: np.ndarray) -> np.ndarray:
    """u from the MLflow registry's copy of the model version (not the local file), loaded with
    ``torch.jit.load`` after its sha256 was checked against the one recorded at registration
    (``registry`` is a :class:`~heat_platform.models.registry.ModelRegistry`)."""
    import tempfile

    import torch

    version = registry.version(model.experiment, model.mlflow_model_version)
    with tempfile.TemporaryDirectory() as workdir:
        network = torch.jit.load(str(registry.download(version, Path(workdir))),
                                 map_location="cpu")
    with torch.inference_mode():
        return network(torch.as_tensor(points, dtype=torch.float32))[:, 0].double().numpy()


def smoke_test(server: BentoServer, model: ServedModel, expected: np.ndarray,
               points: np.ndarray, requests: int = 10) -> SmokeTest:
    import httpx

    ready_after = server.wait_ready()
    latencies, body = [], None
    # the server's own settings say whether it wants a key (HEAT_SERVING_API_KEY, from the
    # environment or the .env file): the smoke test sends the same one
    with httpx.Client(base_url=server.url, timeout=30.0, headers=server.headers) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = client.post("/predict", json={"points": points.tolist(),
                                                     "experiment": model.experiment})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SmokeTestFailed(f"/predict answered {response.status_code}: {response.text}")
            body = response.json()
    difference = float(np.max(np.abs(np.asarray(body["u"]) - expected)))
    lineage = {key: body[key] for key in ("experiment", "model_name", "model_version",
                                          "model_kind", "data_version", "mlflow_run_id")}
    wanted = {"experiment": model.experiment, "model_name": model.mlflow_model_name,
              "model_version": model.mlflow_model_version, "model_kind": model.kind,
              "data_version": model.data_version, "mlflow_run_id": model.mlflow_run_id}
    if lineage != wanted:
        raise SmokeTestFailed(f"the bento answers with lineage {lineage}, expected {wanted}")
    if not difference <= MAX_DIFFERENCE:
        raise SmokeTestFailed(f"the bento's u differs from the MLflow model's by {difference:.3g} "
                              f"(max {MAX_DIFFERENCE:g})")
    return SmokeTest(round(ready_after, 2), difference, round(statistics.median(latencies), 2),
                     round(max(latencies), 2), lineage)


def deploy(paths: PlatformPaths, models: list[ServedModel], *, check: ServedModel,
           registry, default: str | None = None) -> Deployment:
    """Build, smoke-test and publish a bento serving ``models``; ``check`` is smoke-tested."""
    default = default or (check.experiment if len(models) == 1 else sorted(
        m.experiment for m in models)[0])
    bento = build_bento(paths.bentoml_home, models, default, bento_version(models))
    points = smoke_points(check)
    expected = registry_prediction(registry, check, points)
    server = BentoServer.start(bento, bentoml_home=paths.bentoml_home,
                               log_dir=paths.serving / "servers",
                               env={"HEAT_SERVING_LOG_DIR": str(paths.serving / "smoke-log")})
    try:
        smoke = smoke_test(server, check, expected, points)
    finally:
        server.stop()
    write_desired_deployment(paths, {
        "bento": bento, "default": default,
        "experiments": {m.experiment: {"model_name": m.mlflow_model_name,
                                       "model_version": m.mlflow_model_version,
                                       "model_kind": m.kind,
                                       "mlflow_run_id": m.mlflow_run_id,
                                       "data_version": m.data_version} for m in models},
        "published_at": time.time(),
    })
    manifest = write_manifests(paths.serving / "kubernetes" / f"{bento.replace(':', '-')}.yaml",
                               bento)
    live = read_json(live_state_path(paths))
    return Deployment(bento, models, smoke, manifest, live["url"] if live else None)
