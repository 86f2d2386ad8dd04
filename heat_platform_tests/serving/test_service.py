"""The heat service over HTTP, as users call it: a real `bentoml serve` of the deployed bento."""

import json
import math

import httpx
import numpy as np
import pytest

from heat_platform.polling import wait_until
from heat_platform_tests.serving.conftest import EXPERIMENT

# every test here talks to a real `bentoml serve` on loopback
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def registered(deployed):
    """The champion's version as the MLflow registry has it."""
    client = deployed.resources["mlflow"].store().client()
    return client.get_model_version(deployed.champion.model_name, deployed.champion.version)


def assert_lineage(body, registered, deployed):
    assert body["experiment"] == EXPERIMENT
    assert body["model_name"] == registered.name
    assert body["model_version"] == str(registered.version)
    assert body["model_kind"] == registered.tags["kind"] == deployed.champion.kind
    assert body["mlflow_run_id"] == registered.run_id
    assert body["data_version"] == registered.tags["data_version"]
    assert body["dagster_run_id"] == registered.tags["dagster_run_id"]
    assert body["request_id"] and body["timestamp"].endswith("+00:00")


def test_every_endpoint_answers_with_the_registry_lineage(http, registered, deployed):
    import torch

    network = torch.jit.load(str(deployed.champion.artifact))
    points = [[0.3, 0.4, 0.1], [1.7, 0.8, 0.45], [5.0, 0.5, 0.2]]  # the last is outside x in [0, 2]
    expected = network(torch.tensor(points, dtype=torch.float32)).double().numpy()

    single = http.get("/predict-temperature", params={"x": 0.3, "y": 0.4, "t": 0.1})
    assert single.status_code == 200, single.text
    body = single.json()
    assert math.isclose(body["u"], expected[0, 0], rel_tol=1e-5, abs_tol=1e-6)
    assert body["in_domain"] is True
    assert_lineage(body, registered, deployed)

    batch = http.post("/predict", json={"points": points}).json()
    np.testing.assert_allclose(batch["u"], expected[:, 0], rtol=1e-5, atol=1e-6)
    assert batch["in_domain"] == [True, True, False]
    assert_lineage(batch, registered, deployed)
    named = http.post("/predict", json={"points": points[:1], "experiment": EXPERIMENT})
    assert named.status_code == 200
    # past HEAT_SERVING_DIRECT_MAX_POINTS (100 in this server) requests go through the
    # batching model worker
    many = np.random.default_rng(1).uniform([0, 0, 0], [2, 1, 0.5], (500, 3))
    through_worker = http.post("/predict", json={"points": many.tolist()}).json()
    reference = network(torch.tensor(many, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(through_worker["u"], reference[:, 0], rtol=1e-5, atol=1e-6)
    assert all(through_worker["in_domain"])

    a = http.post("/diffusivity", json={"points": [p[:2] for p in points]}).json()
    np.testing.assert_allclose(a["a"], expected[:, 1], rtol=1e-4, atol=1e-6)  # a is t-free
    assert a["in_domain"] == [True, True, False]
    assert_lineage(a, registered, deployed)

    # raw float32 in and out: n u values, then n in_domain bytes, the lineage in headers
    binary = post_binary(http, np.asarray(points, "<f4").tobytes())
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"
    # float32 on the wire; the server's thread count may change the last bit of a sum
    np.testing.assert_array_max_ulp(np.frombuffer(binary.content[:12], "<f4"),
                                    expected[:, 0].astype(np.float32), maxulp=2)
    assert list(binary.content[12:]) == [1, 1, 0]
    assert_lineage({key.removeprefix("x-heat-").replace("-", "_"): value
                    for key, value in binary.headers.items() if key.startswith("x-heat-")},
                   registered, deployed)
    raw_many = post_binary(http, many.astype("<f4").tobytes())  # through the model worker
    np.testing.assert_allclose(np.frombuffer(raw_many.content[:2000], "<f4"), reference[:, 0],
                               rtol=1e-5, atol=1e-6)

    for name in (EXPERIMENT, registered.name):  # KServe v1: experiment or registered model name
        kserve = http.post(f"/v1/models/{name}:predict", json={"instances": points})
        assert kserve.status_code == 200, kserve.text
        body = kserve.json()
        np.testing.assert_allclose(body["predictions"], expected[:, 0], rtol=1e-5, atol=1e-6)
        assert body["in_domain"] == [True, True, False]
        assert body["model_version"] == str(registered.version)
        assert body["model_kind"] == registered.tags["kind"]


BAD = [
    ("post", "/predict", {"points": []}, 400, "at least 1"),
    ("post", "/predict", {"points": [[0.1, 0.2]]}, 400, "points"),
    ("post", "/predict", {"points": [[0.1, 0.2, 0.3, 0.4]]}, 400, "points"),
    ("post", "/predict", {"points": [["a", 0.2, 0.3]]}, 400, "points"),
    ("post", "/predict", {"points": "0.1,0.2,0.3"}, 400, "points"),
    ("post", "/predict", {"points": [[0.1, 0.2, None]]}, 400, "points"),
    ("post", "/predict", {"points": [[0.1, 0.2, 0.3]] * 2001}, 400, "at most 2000"),
    ("post", "/predict", {"points": [[0.1, 0.2, 0.3]], "experiment": "nope"}, 404, "unknown experiment"),
    ("post", "/predict", {}, 400, "points"),
    ("post", "/diffusivity", {"points": [[0.1, 0.2, 0.3]]}, 400, "points"),
    ("get", "/predict-temperature?x=a&y=0.2&t=0.1", None, 422, "x"),
    ("get", "/predict-temperature?x=0.1&y=0.2", None, 422, "t"),
    ("get", "/predict-temperature?x=nan&y=0.2&t=0.1", None, 422, "finite"),
    ("get", "/predict-temperature?x=inf&y=0.2&t=0.1", None, 422, "finite"),
    ("get", "/predict-temperature?x=0.1&y=0.2&t=0.1&experiment=nope", None, 404, "unknown"),
    ("get", "/predict-temperature?x=0.1&y=0.2&t=0.1&experiment=" + "e" * 65, None, 422, "experiment"),
    ("post", "/v1/models/inclusion:predict", {"instances": []}, 422, "instances"),
    ("post", "/v1/models/inclusion:predict", {"instances": [[1, 2]]}, 422, "instances"),
    ("post", "/v1/models/nope:predict", {"instances": [[0.1, 0.2, 0.3]]}, 404, "unknown"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), BAD,
                         ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD)])
def test_bad_input_gets_a_specific_4xx(http, method, path, body, status, says):
    response = http.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert says in response.text


def post_binary(http, body: bytes, content_type="application/octet-stream", **params):
    return http.post("/predict-binary", content=body, params=params,
                     headers={"content-type": content_type})


BAD_BINARY = [
    (b"", {}, 422, "at least one"),
    (bytes(13), {}, 422, "12 bytes each"),
    (np.array([[0.1, 0.2, 0.3], [0.1, np.nan, 0.3]], "<f4").tobytes(), {}, 422, "point 1 is not finite"),
    (np.array([[0.1, np.inf, 0.3]], "<f4").tobytes(), {}, 422, "point 0 is not finite"),
    (bytes(12 * 2001), {}, 413, "at most 2000"),
    (bytes(12), {"content_type": "application/json"}, 415, "application/octet-stream"),
    (bytes(12), {"experiment": "nope"}, 404, "unknown experiment"),
    (bytes(12), {"experiment": "e" * 65}, 422, "at most 64 characters"),
]


@pytest.mark.parametrize(("body", "options", "status", "says"), BAD_BINARY,
                         ids=[f"binary {i}" for i in range(len(BAD_BINARY))])
def test_bad_binary_bodies_get_a_specific_4xx(http, body, options, status, says):
    response = post_binary(http, body, **options)
    assert response.status_code == status, response.text
    assert says in response.text


def test_the_openapi_schema_documents_every_route(http):
    """GET /predict-temperature and POST /predict-binary are served by lean Starlette handlers;
    the FastAPI routes behind them still document them."""
    paths = http.get("/docs.json").json()["paths"]
    single = paths["/predict-temperature"]["get"]
    assert {p["name"] for p in single["parameters"] if p["in"] == "query"} == {
        "x", "y", "t", "experiment"}
    assert "TemperatureAtPoint" in json.dumps(single["responses"]["200"])
    binary = paths["/predict-binary"]["post"]
    assert [p["name"] for p in binary["parameters"]] == ["experiment"]
    assert "application/octet-stream" in binary["requestBody"]["content"]
    for path in ("/predict", "/diffusivity", "/v1/models/{name}:predict"):
        assert "post" in paths[path], path


def test_nan_and_inf_in_json_bodies_are_refused(http):
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = '{"points": [[0.1, 0.2, ' + token + ']]}'
        response = http.post("/predict", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (token, response.text)
    response = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_the_server_survives_bad_input_and_reports_metrics(http, server):
    for _ in range(20):
        http.post("/predict", json={"points": [[0.1, "x", 0.3]]})
    assert server.process.poll() is None
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    ok = http.post("/predict", json={"points": [[0.5, 0.5, 0.1], [9.0, 0.5, 0.1]]})
    assert ok.status_code == 200
    metrics = http.get("/metrics").text
    version = ok.json()["model_version"]
    assert f'heat_predictions_total{{endpoint="/predict",experiment="{EXPERIMENT}",' \
           f'model_version="{version}"}}' in metrics
    assert "heat_out_of_domain_points_total" in metrics
    out_of_domain = [line for line in metrics.splitlines()
                     if line.startswith("heat_out_of_domain_points_total{") and "/predict\"" in line]
    assert out_of_domain and float(out_of_domain[0].split()[-1]) >= 1


def test_requests_are_sampled_into_the_serving_log(http, deployed):
    response = http.post("/predict", json={"points": [[0.25, 0.5, 0.2]] * 3}).json()
    log_dir = deployed.paths.serving / "log"

    def logged():
        return [entry for path in log_dir.rglob("requests-*.jsonl")
                for entry in map(json.loads, path.read_text().splitlines())
                if entry["request_id"] == response["request_id"]]

    (entry,) = wait_until(logged, timeout_s=10, interval_s=0.5, what="the request in the log")
    assert entry["endpoint"] == "/predict" and entry["experiment"] == EXPERIMENT
    assert entry["model_version"] == response["model_version"]
    assert entry["x"] == [0.25] * 3 and entry["value"] == response["u"]
    assert entry["in_domain"] == [True] * 3 and entry["latency_ms"] > 0


def test_api_key_is_checked_before_validation(deployed):
    with deployed.start(HEAT_SERVING_API_KEY="s3cret") as secured, \
            httpx.Client(base_url=secured.url, timeout=30.0) as client:
        denied = client.post("/predict", json={"points": "not even points"})
        assert denied.status_code == 401 and "API key" in denied.text
        assert client.get("/predict-temperature?x=0.1&y=0.1&t=0.1",
                          headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/predict", json={"points": [[0.1, 0.2, 0.3]]},
                           headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/predict", json={"points": [[0.1, 0.2, 0.3]]},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/predict", json={"points": []},
                           headers={"X-API-Key": "s3cret"}).status_code == 400
        assert client.get("/readyz").status_code == 200  # probes stay open


def test_serving_drift_reads_the_log_window_and_the_nightly_schedule_asks_for_it(http, deployed):
    import dagster as dg

    from heat_platform.assets.monitoring import nightly_serving_drift
    from heat_platform_tests.conftest import latest_materialization, materialize

    rng = np.random.default_rng(0)  # users asking far outside the training domain
    points = np.column_stack([rng.uniform(3, 6, 300), rng.uniform(0, 1, 300),
                              rng.uniform(0.4, 0.5, 300)])
    for chunk in np.array_split(points, 5):  # the log keeps <= 64 points per request
        assert http.post("/predict", json={"points": chunk.tolist()}).status_code == 200

    def logged_far_out() -> bool:  # the serving log flushes every second
        return sum(sum(x >= 3 for x in entry["x"]) for path in log_dir.rglob("requests-*.jsonl")
                   for entry in map(json.loads, path.read_text().splitlines())) >= 300

    log_dir = deployed.paths.serving / "log"
    wait_until(logged_far_out, timeout_s=15, interval_s=0.5, what="the 300 points in the log")

    materialize(deployed.instance, deployed.resources, ["serving_drift"], EXPERIMENT,
                run_config={"ops": {"serving_drift": {"config": {"window_hours": 1}}}})
    # (default min_rows 200: the 300 points above are enough)
    metadata = latest_materialization(deployed.instance, "serving_drift", EXPERIMENT).metadata
    assert metadata["rows"].value >= 300
    assert metadata["drift"].value is True and "x" in metadata["reasons"].value
    # the 300 far-out points are counted out of the domain, whatever other tests logged besides
    rows, share = metadata["rows"].value, metadata["out-of-domain share"].value
    assert round(share * rows) >= 300, (share, rows)
    assert metadata["evidently report (file)"].value.endswith(".html")
    assert "/get-artifact?path=evidently_report/" in metadata["evidently report (HTTP)"].value

    import datetime as dt

    night = dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=deployed.instance, scheduled_execution_time=night)
    (request,) = nightly_serving_drift(context)
    assert request.partition_key == EXPERIMENT
    assert request.run_key == f"serving-drift:{EXPERIMENT}:2026-11-24"
