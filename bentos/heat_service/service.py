"""heat-platform's serving API: temperatures u(x, y, t) and diffusivities a(x, y) from the champions.

Two BentoML services in one server:

* ``HeatModels`` holds the champion TorchScript module of every served experiment (class-level
  ``BentoModel``s named in ``served_models.json``, which the platform writes when it builds the
  bento) and exposes one batchable method, so concurrent large requests are merged by BentoML's
  adaptive batching before the network runs.
* ``HeatService`` is what clients call: it validates input, routes to an experiment, answers
  requests of up to ``DIRECT_MAX_POINTS`` points with its own copy of the networks (cheaper than
  the hop to ``HeatModels`` for them; bench/serving.py), flags points outside the training
  domain, answers with the model's lineage, counts predictions for Prometheus and samples
  requests into the serving log.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypeVar

import bentoml
import numpy as np
from auth import ApiKeyMiddleware
from direct_route import DirectJsonRoute
from errors import ErrorBodies, OpenApiDocument, document, install_error_handlers
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from heat_settings import ServingSettings
from limits import RequestLimits
from pydantic import BaseModel, ValidationError
from schemas import (
    MAX_POINTS,
    Diffusivities,
    Error,
    ExperimentName,
    ExperimentQuery,
    KServeRequest,
    KServeResponse,
    Lineage,
    Points2,
    Points3,
    TemperatureAtPoint,
    TemperatureQuery,
    Temperatures,
)
from serving_log import ServingLog

ModelT = TypeVar("ModelT", bound=BaseModel)

MANIFEST = json.loads((Path(__file__).parent / "served_models.json").read_text())
EXPERIMENTS: list[str] = sorted(MANIFEST["models"])
DEFAULT_EXPERIMENT: str = MANIFEST.get("default") or EXPERIMENTS[0]
# POST /predict-binary's body: (x, y, t) triples of little-endian float32.
BINARY = "application/octet-stream"
BINARY_POINT_BYTES = 12
# Every HEAT_SERVING_* variable, typed and documented once (the platform's settings module,
# copied into the bento as heat_settings.py).
SETTINGS = ServingSettings.load()
# Requests with at most this many points are answered in the front worker (see
# HeatService.__init__): ~2 ms of one CPU thread for this network, so one large request never
# holds a front worker's event loop for long; larger requests go to the batching model worker.
DIRECT_MAX_POINTS = SETTINGS.direct_max_points
# BentoML's OpenTelemetry spans cost ~10 % of a small request and go nowhere unless an exporter
# is configured (a BentoML configuration file, BENTOML_CONFIG, and its exporter package), so no
# URL is traced unless HEAT_SERVING_TRACING=1.
TRACING = {} if SETTINGS.tracing else {"excluded_urls": [".*"]}


def _freeze_startup_objects() -> None:
    """Move everything alive after a worker's startup out of the garbage collector's reach."""
    # A worker holds ~250k objects once torch, BentoML and the models are loaded, and each full
    # (generation 2) collection walked them all: ~160 ms during which none of the worker's
    # requests moved, every few seconds under load (bench/serving.py). Frozen after startup,
    # they are never walked again.
    if SETTINGS.gc_freeze:
        gc.collect()
        gc.freeze()


class _HeatModels:
    """The networks; rows arrive as [experiment index, x, y, t] from many requests at once."""

    def __init__(self) -> None:
        self.torch = _torch()
        self.networks = [_network(self.torch, getattr(self, _attribute(name)))
                         for name in EXPERIMENTS]

    @bentoml.on_startup
    def _after_startup(self) -> None:
        _freeze_startup_objects()

    # max_latency_ms is the point where BentoML sheds load (503), not the batching window,
    # which adapts by itself; on a busy 2-core machine 20 ms would shed ordinary traffic.
    @bentoml.api(batchable=True, max_batch_size=50_000, max_latency_ms=10_000)
    def infer(self, rows: np.ndarray) -> np.ndarray:
        """[n, 4] rows -> [n, 2] (u, a) in physical units."""
        out = np.empty((len(rows), 2), dtype=np.float64)
        index = rows[:, 0].astype(np.int64)
        for experiment in np.unique(index):
            mask = index == experiment
            out[mask] = _run(self.torch, self.networks[experiment], rows[mask, 1:4])
        return out


def _attribute(experiment: str) -> str:
    return "model_" + "".join(ch if ch.isalnum() else "_" for ch in experiment)


for _experiment in EXPERIMENTS:  # BentoML finds models as class attributes
    setattr(_HeatModels, _attribute(_experiment),
            bentoml.models.BentoModel(MANIFEST["models"][_experiment]))

HeatModels = bentoml.service(
    name="heat_models",
    workers=SETTINGS.model_workers,
    traffic={"timeout": 30},
    # BentoML 1.4's dependency client replaces its HTTP session every `max_requests` calls and
    # closes the old one under requests still in flight ("Server disconnected"); on one host
    # over a Unix socket there is nothing to rebalance, so never recycle it.
    runner_connection={"max_age": 1e9, "max_requests": 2**62},
)(_HeatModels)

app = FastAPI(title="heat-platform extras")
install_error_handlers(app)  # errors answered as schemas.Error, like BentoML's routes


@bentoml.service(
    name="heat_service",
    workers=SETTINGS.workers,  # the front workers do most of the work: one per core
    traffic={"timeout": 30, "max_concurrency": 512},
    metrics={"enabled": True},
    tracing=TRACING,
    logging={"access": {"enabled": SETTINGS.access_log}},
)
@bentoml.asgi_app(app, path="/")
class HeatService:
    models = bentoml.depends(HeatModels)

    def __init__(self) -> None:
        self.lineage = {name: _lineage(bentoml.models.get(MANIFEST["models"][name]))
                        for name in EXPERIMENTS}
        # Requests up to DIRECT_MAX_POINTS are answered here directly: the hop to the model
        # worker (two HTTP stacks, pickling) costs several times the network's own time for
        # them. Larger batches go through the adaptive-batching model worker, which merges
        # concurrent ones and keeps the front workers' event loops free.
        self.torch = _torch()
        self.direct = {name: _network(self.torch, bentoml.models.get(MANIFEST["models"][name]))
                       for name in EXPERIMENTS}
        self.temperature = {name: _temperature_method(network)
                            for name, network in self.direct.items()}
        self.log_dropped = bentoml.metrics.Counter(
            name="heat_serving_log_dropped_total",
            documentation="Sampled requests the serving log could not write (a full disk)")
        self.log = ServingLog.from_settings(SETTINGS, on_dropped=self.log_dropped.inc)
        self.predictions = bentoml.metrics.Counter(
            name="heat_predictions_total", documentation="Points predicted",
            labelnames=["experiment", "model_version", "endpoint"])
        self.out_of_domain = bentoml.metrics.Counter(
            name="heat_out_of_domain_points_total",
            documentation="Points outside the training domain (ratio: divide by heat_predictions_total)",
            labelnames=["experiment", "model_version", "endpoint"])

    @bentoml.on_startup
    def _after_startup(self) -> None:
        _freeze_startup_objects()

    @bentoml.api(route="/predict")
    async def predict(self, points: Points3, experiment: ExperimentName = None) -> Temperatures:
        """u at a batch of points [[x, y, t], ...], with the lineage of the model once."""
        return Temperatures(**await self.temperatures(self._experiment(experiment), points))

    async def temperatures(self, name: str, points: list[tuple[float, ...]]) -> dict[str, Any]:
        """POST /predict's answer for validated points, as the fields of ``Temperatures`` (the
        API above and its direct route, below, both answer with it)."""
        started = time.perf_counter()
        xyt = _array(points, 3)
        u, in_domain = await self._evaluate(name, xyt, "u")
        return {**self._answered(name, "/predict", xyt, u, in_domain, started),
                "u": u.tolist(), "in_domain": in_domain.tolist()}

    @bentoml.api(route="/diffusivity")
    async def diffusivity(self, points: Points2, experiment: ExperimentName = None) -> Diffusivities:
        """a at a batch of points [[x, y], ...] (a does not depend on t)."""
        started = time.perf_counter()
        name = self._experiment(experiment)
        xy = _array(points, 2)
        t0 = self.lineage[name]["domain"]["t"][0]
        xyt = np.column_stack([xy, np.full(len(xy), t0)])
        a, in_domain = await self._evaluate(name, xyt, "a")
        return Diffusivities(a=a.tolist(), in_domain=in_domain.tolist(),
                             **self._answered(name, "/diffusivity", xyt, a, in_domain, started))

    async def temperature_at(self, x: float, y: float, t: float,
                             experiment: str | None) -> TemperatureAtPoint:
        """u at one point (GET /predict-temperature, below)."""
        started = time.perf_counter()
        name = self._experiment(experiment, http=True)
        xyt = np.array([[x, y, t]], dtype=np.float64)
        u, in_domain = await self._evaluate(name, xyt, "u")
        return TemperatureAtPoint(
            u=float(u[0]), in_domain=bool(in_domain[0]),
            **self._answered(name, "/predict-temperature", xyt, u, in_domain, started))

    async def kserve(self, model: str, body: KServeRequest) -> KServeResponse:
        """The KServe v1 protocol (POST /v1/models/{name}:predict, below)."""
        started = time.perf_counter()
        experiment = self._experiment(_experiment_of_model(model, self.lineage), http=True)
        xyt = _array(body.instances, 3)
        u, in_domain = await self._evaluate(experiment, xyt, "u")
        lineage = self._answered(experiment, "/v1/models:predict", xyt, u, in_domain, started)
        return KServeResponse(predictions=u.tolist(), in_domain=in_domain.tolist(),
                              model_name=lineage["model_name"],
                              model_version=lineage["model_version"],
                              model_kind=lineage["model_kind"],
                              data_version=lineage["data_version"])

    async def binary(self, body: bytes, content_type: str, experiment: str | None) -> Response:
        """u at a batch of points sent as raw numbers (POST /predict-binary, below)."""
        started = time.perf_counter()
        name = self._experiment(experiment, http=True)
        xyt = _binary_points(body, content_type)
        u, in_domain = await self._evaluate(name, xyt, "u")
        lineage = self._answered(name, "/predict-binary", xyt, u, in_domain, started)
        return Response(u.astype("<f4").tobytes() + in_domain.astype(np.uint8).tobytes(),
                        media_type=BINARY, headers={
                            f"x-heat-{key.replace('_', '-')}": value
                            for key, value in lineage.items()})

    @functools.cache  # noqa: B019 (one service instance per worker, a handful of keys)
    def _counters(self, name: str, endpoint: str) -> tuple[Any, Any]:
        labels = {"experiment": name, "model_version": self.lineage[name]["model_version"],
                  "endpoint": endpoint}
        return self.predictions.labels(**labels), self.out_of_domain.labels(**labels)

    def served(self, requested: str | None) -> str | None:
        """The experiment a request names (the default one when it names none), if served."""
        name = requested or DEFAULT_EXPERIMENT
        return name if name in self.lineage else None

    def _experiment(self, requested: str | None, http: bool = False) -> str:
        name = self.served(requested)
        if name is None:
            message = (f"unknown experiment {requested or DEFAULT_EXPERIMENT!r}; "
                       f"served: {', '.join(EXPERIMENTS)}")
            if http:
                raise HTTPException(status_code=404, detail=message)
            raise bentoml.exceptions.NotFound(message)
        return name

    async def _evaluate(self, name: str, xyt: np.ndarray, quantity: str):
        """u or a (``quantity``) at the points, and whether each is inside the training domain
        (for a, in x and y only)."""
        if len(xyt) <= DIRECT_MAX_POINTS:
            values = self._direct(name, xyt, quantity)
        else:
            rows = np.column_stack([np.full(len(xyt), EXPERIMENTS.index(name), np.float64), xyt])
            values = (await self.models.to_async.infer(rows))[:, 0 if quantity == "u" else 1]
        domain = self.lineage[name]["domain"]
        in_domain = np.ones(len(xyt), dtype=bool)
        for column, axis in enumerate(("x", "y", "t") if quantity == "u" else ("x", "y")):
            lo, hi = domain[axis]
            in_domain &= (xyt[:, column] >= lo) & (xyt[:, column] <= hi)
        return values, in_domain

    def _direct(self, name: str, xyt: np.ndarray, quantity: str) -> np.ndarray:
        """The network in this worker, evaluating only the quantity asked for."""
        if quantity == "a":
            return _run(self.torch, self.direct[name].diffusivity, xyt[:, :2])
        return _run(self.torch, self.temperature[name], xyt)

    def _answered(self, name: str, endpoint: str, xyt: np.ndarray, values: np.ndarray,
                  in_domain: np.ndarray, started: float) -> dict[str, Any]:
        lineage = {key: value for key, value in self.lineage[name].items() if key != "domain"}
        answer = {**lineage, "request_id": uuid.uuid4().hex,
                  "timestamp": dt.datetime.now(dt.UTC).isoformat()}
        predicted, outside = self._counters(name, endpoint)
        predicted.inc(len(xyt))
        outside.inc(len(in_domain) - int(np.count_nonzero(in_domain)))
        self.log.record(
            columns={"x": xyt[:, 0], "y": xyt[:, 1], "t": xyt[:, 2], "value": values,
                     "in_domain": in_domain},
            request_id=answer["request_id"], endpoint=endpoint, experiment=name,
            model_version=lineage["model_version"], data_version=lineage["data_version"],
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return answer


# The FastAPI routes (query parameters and paths BentoML's @bentoml.api cannot express) are
# module functions that get the worker's HeatService from ``bentoml.get_current_service()``.
# Written as methods, BentoML would inject ``self`` with a sync dependency, which FastAPI runs in
# its thread pool on every request: 0.57 of the 1.47 ms of CPU a single point cost in the front
# worker's ASGI app, and half its requests/s at 16 clients (bench/serving.py).
# GET /predict-temperature and POST /predict-binary are answered by plain Starlette handlers,
# registered before the FastAPI routes of the same paths (Starlette answers with the first route
# that matches): FastAPI's per-request machinery (dependency solving, parameter and response
# model validation) cost ~0.2 of the ~0.8 ms of CPU a single point took in the worker's ASGI app
# (bench/serving.py). The FastAPI routes document them in the OpenAPI schema and do the same by
# calling the handlers; the query is validated by the same pydantic model either way.
async def _predict_temperature(request: Request) -> Response:
    query = _query(TemperatureQuery, request)
    answer = await bentoml.get_current_service().temperature_at(
        query.x, query.y, query.t, query.experiment)
    return Response(answer.model_dump_json(), media_type="application/json")


async def _predict_binary(request: Request) -> Response:
    query = _query(ExperimentQuery, request)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > BINARY_POINT_BYTES * MAX_POINTS:
        raise HTTPException(status_code=413, detail=f"at most {MAX_POINTS} points a request")
    body = await request.body()
    return await bentoml.get_current_service().binary(
        body, request.headers.get("content-type", ""), query.experiment)


app.add_route("/predict-temperature", _predict_temperature, methods=["GET"],
              include_in_schema=False)
app.add_route("/predict-binary", _predict_binary, methods=["POST"], include_in_schema=False)


@app.get("/predict-temperature", response_model=TemperatureAtPoint)
async def predict_temperature(
    request: Request, query: Annotated[TemperatureQuery, Query()],
) -> Response:
    """u at one point: the original design's documented GET API."""
    return await _predict_temperature(request)


@app.post("/predict-binary", response_class=Response, openapi_extra={"requestBody": {
    "required": True, "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}}}})
async def predict_binary(request: Request, query: Annotated[ExperimentQuery, Query()]) -> Response:
    """u at a batch of points without JSON: the body is the points as little-endian float32
    (x, y, t) triples (12 bytes a point, ``application/octet-stream``); the answer's body is the
    n float32 u values followed by n ``in_domain`` bytes (1 inside the training domain, 0
    outside), its lineage the ``X-Heat-*`` headers (``x-heat-model-version``, ...). For clients
    that move many points: no JSON to write, parse or validate (bench/serving.py)."""
    return await _predict_binary(request)


@app.post("/v1/models/{name}:predict", response_model=KServeResponse)
async def kserve_predict(name: str, body: KServeRequest) -> KServeResponse:
    """KServe v1 protocol; ``name`` is the experiment or its registered model name."""
    return await bentoml.get_current_service().kserve(name, body)


def _query(model: type[ModelT], request: Request) -> ModelT:
    """The request's query string validated by ``model``, or the 422 FastAPI would answer."""
    try:
        return model.model_validate(request.query_params)
    except ValidationError as error:
        raise RequestValidationError([{**detail, "loc": ("query", *detail["loc"])}
                                      for detail in error.errors(include_url=False)]) from None


def _torch() -> Any:
    """torch, imported when a worker starts, with HEAT_SERVING_TORCH_THREADS threads (default 1)."""
    import torch

    torch.set_num_threads(SETTINGS.torch_threads)
    return torch


def _network(torch: Any, model: Any) -> Any:
    """The TorchScript module of a BentoML model (a stored model or a class-level BentoModel)."""
    return torch.jit.load(model.path_of("model.pt"), map_location="cpu")


def _temperature_method(network: Any) -> Any:
    """u alone; models exported before ``temperature`` existed evaluate u and a and keep u."""
    if hasattr(network, "temperature"):
        return network.temperature
    return lambda points: network(points)[:, 0]


def _run(torch: Any, method: Any, points: np.ndarray) -> np.ndarray:
    """A network method on points (float32 in, float64 numpy out), without autograd."""
    with torch.inference_mode():
        return method(torch.from_numpy(np.ascontiguousarray(points, np.float32))).double().numpy()


def _array(points: list[tuple[float, ...]], width: int) -> np.ndarray:
    """Validated points (a list of tuples) as an [n, width] float64 array; np.fromiter is
    several times faster than np.asarray on a list of tuples."""
    flat = np.fromiter(itertools.chain.from_iterable(points), np.float64, len(points) * width)
    return flat.reshape(len(points), width)


def _binary_points(body: bytes, content_type: str) -> np.ndarray:
    """The [n, 3] points of a /predict-binary body, or the 4xx that says what is wrong with it."""
    if content_type.split(";")[0].strip().lower() != BINARY:
        raise HTTPException(status_code=415, detail=f"send the points as {BINARY}")
    if not body or len(body) % BINARY_POINT_BYTES:
        raise HTTPException(status_code=422, detail=(
            f"body of {len(body)} bytes: points are little-endian float32 (x, y, t) triples, "
            f"{BINARY_POINT_BYTES} bytes each, at least one"))
    n = len(body) // BINARY_POINT_BYTES
    if n > MAX_POINTS:
        raise HTTPException(status_code=413, detail=f"{n} points, at most {MAX_POINTS} a request")
    xyt = np.frombuffer(body, dtype="<f4").reshape(n, 3).astype(np.float64)
    finite = np.isfinite(xyt).all(axis=1)
    if not finite.all():
        raise HTTPException(status_code=422, detail=(
            f"point {int(np.argmin(finite))} is not finite (NaN or infinity)"))
    return xyt


def _lineage(model: Any) -> dict[str, Any]:
    meta = model.info.metadata
    return {
        "experiment": meta["experiment"],
        "model_name": meta["mlflow_model_name"],
        "model_version": str(meta["mlflow_model_version"]),
        "model_kind": meta.get("kind", "pinn"),
        "data_version": meta["data_version"],
        "mlflow_run_id": meta["mlflow_run_id"],
        "dagster_run_id": meta.get("dagster_run_id", ""),
        "domain": meta["domain"],
    }


def _experiment_of_model(name: str, lineage: dict[str, dict[str, Any]]) -> str:
    for experiment, info in lineage.items():
        if name == info["model_name"]:
            return experiment
    return name


async def _predict_direct(request: Any) -> bytes | None:
    """POST /predict through :class:`DirectJsonRoute`: the API's answer, serialised by the same
    ``Temperatures`` model, or ``None`` for an unknown experiment (BentoML's route answers it)."""
    service = bentoml.get_current_service()
    name = service.served(request.experiment)
    if name is None:
        return None
    # built from values this service computed, so not validated again (the API's route does)
    answer = Temperatures.model_construct(**await service.temperatures(name, request.points))
    return answer.model_dump_json().encode()


def _openapi_document() -> dict[str, Any]:
    """BentoML's OpenAPI document, rewritten to describe every answer (errors.document)."""
    schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    error_schemas = {"Error": {k: v for k, v in schema.items() if k != "$defs"},
                     **schema.get("$defs", {})}
    return document(HeatService.openapi_spec.asdict(), error_schemas,
                    [f"x-heat-{name.replace('_', '-')}" for name in Lineage.model_fields],
                    api_key=SETTINGS.api_key is not None)


def _json_only(path: str) -> bool:
    """The routes that read a JSON body."""
    return path in ("/predict", "/diffusivity") or (
        path.startswith("/v1/models/") and path.endswith(":predict"))


# Service middlewares run in the order added: the API key is checked before anything else,
# then the body is read within its limits; every error answer leaves in one shape.
if SETTINGS.api_key is not None:
    HeatService.add_asgi_middleware(ApiKeyMiddleware, api_key=SETTINGS.api_key.get_secret_value())
HeatService.add_asgi_middleware(ErrorBodies)
HeatService.add_asgi_middleware(RequestLimits, max_body_bytes=SETTINGS.max_body_bytes,
                                body_timeout_s=SETTINGS.body_timeout, json_only=_json_only)
HeatService.add_asgi_middleware(OpenApiDocument, path="/docs.json", build=_openapi_document)
# JSON POST /predict requests that validate are answered by direct_route.DirectJsonRoute instead
# of BentoML's API wrapper: ~1/5 less CPU for a 1000-point request (bench/serving.py).
if SETTINGS.direct_json:
    HeatService.add_asgi_middleware(DirectJsonRoute, path="/predict",
                                    input_model=HeatService.apis["predict"].input_spec,
                                    answer=_predict_direct)
