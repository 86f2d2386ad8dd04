"""Latency and throughput of the heat service as users reach it, beside the bento it proxies and a
naive FastAPI baseline.

A tiny PINN (the ``fast`` profile's network sizes, 20 Adam steps: accuracy does not matter for
latency) is trained on PINNacle HeatInv, exported to TorchScript and served by ``served`` (the
user path: `heat-platform serve`, HAProxy in front of the platform's bento, serve's defaults; the
headline figures are its), by ``bento`` (the same bento under a bare ``bentoml serve``, default
settings; the historical targets are judged on it), by labelled bento variants
(``EXTRA_CONFIGS`` or ``--bento-config``; ``no-access-log`` is the bento configured as serve
configures its backend, always measured: the user path is judged against it) and by ``naive`` /
``naive-workers<cores>`` (bench/naive_service.py under uvicorn). All servers listen on 127.0.0.1
for the whole run; each scenario runs against every service in turn, from the same load
generator. Scenarios: GET
/predict-temperature (one point), POST /predict (1000 points, JSON) and, bento only, POST
/predict-binary (the same points as float32), at 1, 16 and 64 closed-loop clients, then one
point and JSON at 1 client again ("after_load", not judged). Per scenario and service:
latency percentiles (request sent to answer read), requests/s, points/s, errors, the CPU cores
used by the client, the server under test, the idle servers and the machine, and the load
average; ``model_only_one_thread`` is the network alone. The load comes from one spawned
process (asyncio + aiohttp on uvloop) sharing the machine's cores with the servers.

Run from the repository root (the user path needs HAProxy: apt-get install haproxy):
    .venv/bin/python bench/serving.py                 # ~11 min -> bench/results/serving.json
    .venv/bin/python bench/serving.py --quick --out /tmp/serving.json      # smoke run, ~3 min
    .venv/bin/python bench/serving.py --default-only  # served, bento, its no-access-log variant
                                                      # and naive: ~8 min
    .venv/bin/python bench/serving.py --bento-config threads2:HEAT_SERVING_TORCH_THREADS=2
Options: --duration S (measured seconds per scenario, 8), --max-requests N, --warmup N,
--bento-config LABEL:K=V,... (repeatable), --default-only, --quick, --out PATH. Writes the
figures, the user path against the direct bento (``headline``), the targets' pass/fail and the
machine's facts to --out (bench/results/serving.json). One run per scenario is a draw on a
shared 2-core machine: bench/serving_trials.py --served repeats the user path's comparison.

History and figures: bench/RESULTS.md#serving
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path

from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
# The direct bento configured like the backends of `heat-platform serve` (no access log): the
# user path is judged against it, so the proxy's cost is what the ratio shows.
USER_PATH_BASELINE = "bento-no-access-log"
USER_PATH_TARGETS = {"p95_ratio_max": 1.25, "throughput_ratio_min": 0.8}
BENCH_DIR = Path(__file__).resolve().parent
EXPERIMENT = "bench-heatinv"
BATCH_POINTS = 1000
MAX_POINTS = 5000
TORCH_THREADS = 1
CONCURRENCIES = (1, 16, 64)
# (name, kind, clients, warm-up): from light to heavy load, then light load again. Kinds:
# "single" (GET /predict-temperature), "batch" (JSON POST /predict), "binary" (the same points
# as raw float32 to POST /predict-binary; the bento only, the naive service has no such route). BentoML's
# adaptive batcher learns how long to hold requests from the queueing it saw, so a light load
# right after a heavy one is measured apart ("after_load", no warm-up) rather than mixed in.
SCENARIOS = [
    *((f"{kind}_c{c}", kind, c, True) for c in CONCURRENCIES
      for kind in ("single", "batch", "binary")),
    ("single_c1_after_load", "single", 1, False),
    ("batch_c1_after_load", "batch", 1, False),
]
# Labelled variants measured beside the default (the default's figures are the ones the targets
# are judged on; the variants show what server settings change on this machine).
EXTRA_CONFIGS = [
    "workers1:HEAT_SERVING_WORKERS=1",
    "no-access-log:HEAT_SERVING_ACCESS_LOG=0",
    "direct64:HEAT_SERVING_DIRECT_MAX_POINTS=64",
    "gc-unfrozen:HEAT_SERVING_GC_FREEZE=0",
    "bentoml-route:HEAT_SERVING_DIRECT_JSON=0",
]
TARGETS = {
    "single_p95_ms_at_16_clients_max": 20.0,
    "batch_points_per_s_min": 1e6,
    "slo_p95_ms_max": 200.0,
    "slo_error_rate_max": 0.001,
}


# --- the model and the servers -------------------------------------------------------------


def train_model(directory: Path) -> tuple[Path, dict[str, list[float]], dict]:
    """A tiny trained PINN exported to TorchScript: the real serving architecture."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    from heat_platform.heat.heatinv import heatinv_observations, heatinv_scaling, heatinv_spec
    from heat_platform.pinn.config import PINNConfig
    from heat_platform.pinn.trainer import train_pinn

    spec = heatinv_spec()
    train = heatinv_observations(noise_seed=0, spec=spec)
    config = PINNConfig.profile("quick", adam_iterations=20, lbfgs_iterations=0,
                                 n_domain=200, threads=1, device="cpu", log_every=10,
                                 checkpoint_every=20)
    start = time.perf_counter()
    trained = train_pinn(spec, train, heatinv_scaling(train, spec), config)
    path = trained.export(directory / "model.pt")
    domain = {axis: [float(lo), float(hi)] for axis, (lo, hi) in spec.domain.bounds().items()}
    facts = {"spec": spec.name, "dtype": config.dtype, "hidden_u": config.hidden_u,
             "depth_u": config.depth_u, "hidden_a": config.hidden_a, "depth_a": config.depth_a,
             "adam_iterations": config.adam_iterations, "lbfgs_iterations": 0,
             "train_and_export_s": round(time.perf_counter() - start, 1)}
    return path, domain, facts


def model_only(model: Path, seconds: float = 1.0) -> dict:
    """Points/s of the TorchScript network alone, in this process, one torch thread: the ceiling
    for any server that runs it on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    network = torch.jit.load(str(model), map_location="cpu")
    out = {}
    methods = {"u_and_a": network.forward, "u_only": network.temperature}
    with torch.inference_mode():
        for method, call in methods.items():
            for n in (1, BATCH_POINTS, MAX_POINTS):
                points = torch.rand(n, 3)
                for _ in range(20):
                    call(points)
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    call(points)
                    calls += 1
                elapsed = time.perf_counter() - start
                out[f"{method}_batch_{n}"] = {"ms_per_call": round(1000 * elapsed / calls, 4),
                                              "points_per_s": round(calls * n / elapsed)}
    torch.set_num_threads(threads)
    return out


def build(bentoml_home: Path, model: Path, domain: dict[str, list[float]]) -> str:
    from heat_platform.serving.bento import ServedModel, build_bento

    served = ServedModel(experiment=EXPERIMENT, torchscript=model,
                         mlflow_model_name="heat-model-bench", mlflow_model_version="1",
                         mlflow_run_id=uuid.uuid4().hex, data_version="bench",
                         dagster_run_id="bench", domain=domain)
    return build_bento(bentoml_home, [served], default=EXPERIMENT, version="bench")


@dataclasses.dataclass
class Service:
    """One running server: its label, URL, root process and the settings it was started with."""

    label: str
    kind: str  # bento | naive
    url: str
    pid: int
    settings: dict
    stop: object  # () -> None
    ready_s: float


def start_bento(label: str, bento: str, bentoml_home: Path, log_dir: Path,
                overrides: dict[str, str]) -> Service:
    from heat_platform.serving.server import BentoServer

    env = {"HEAT_SERVING_MODEL_WORKERS": "1", "HEAT_SERVING_TORCH_THREADS": str(TORCH_THREADS),
           "HEAT_SERVING_MAX_POINTS": str(MAX_POINTS), **overrides}
    server = BentoServer.start(bento, bentoml_home=bentoml_home, log_dir=log_dir, env=env)
    try:
        ready = server.wait_ready(timeout=240.0)
    except BaseException:
        server.stop()
        raise
    settings = {"server": "bentoml serve", "bento": bento, "env": env,
                "front_workers": _front_workers(server.process.pid),
                "HEAT_SERVING_LOG_DIR": "unset (no serving log)"}
    return Service(label, "bento", server.url, server.process.pid, settings, server.stop,
                   round(ready, 1))


def _front_workers(pid: int) -> int:
    import psutil

    return sum("heat_models" not in " ".join(child.cmdline())
               for child in psutil.Process(pid).children(recursive=True)
               if "_bentoml_impl.worker" in " ".join(child.cmdline()))


def start_served(bento: str, store: Path, workdir: Path, log_dir: Path) -> Service:
    """`heat-platform serve` on its own platform home, serving ``bento`` (copied from ``store``),
    with serve's defaults and the bench's backend settings (model workers, threads, points)."""
    from heat_platform.paths import PlatformPaths
    from heat_platform.processes import stop_process_group
    from heat_platform.serving.proxy import find_binary
    from heat_platform.serving.rollout import live_state_path, read_json, write_desired_deployment
    from heat_platform.serving.server import free_port

    paths = PlatformPaths(workdir / "served-home")
    shutil.copytree(store, paths.bentoml_home)
    write_desired_deployment(paths, {"bento": bento, "default": EXPERIMENT,
                                     "published_at": time.time()})
    port = free_port()
    backend = {"HEAT_SERVING_MODEL_WORKERS": "1", "HEAT_SERVING_TORCH_THREADS": str(TORCH_THREADS),
               "HEAT_SERVING_MAX_POINTS": str(MAX_POINTS)}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HEAT_SERVING_")},
           **backend, "HEAT_PLATFORM_ENV_FILE": ""}
    command = [str(Path(sys.executable).with_name("heat-platform")), "--home", str(paths.home),
               "serve", "--port", str(port)]
    log_path = log_dir / f"served-{port}.log"
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)

    def stop() -> None:
        stop_process_group(process, grace_s=60)

    while (read_json(live_state_path(paths)) or {}).get("status") != "live":
        if process.poll() is not None or time.monotonic() - started > 240:
            stop()
            raise RuntimeError(f"heat-platform serve not live:\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)
    live = read_json(live_state_path(paths))
    haproxy = subprocess.run([find_binary(), "-v"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[0]
    settings = {"server": "heat-platform serve: HAProxy in front of bentoml serve",
                "command": "heat-platform --home <tmp> serve --port <free port>",
                "env": backend, "haproxy": haproxy, "backend": live["backend"],
                "notes": ("serve's defaults: backend access log off, the sampled serving log "
                          "on (HEAT_SERVING_LOG_SAMPLE 0.25 into <home>/serving/log), one "
                          "HAProxy thread, keep-alive to the backend")}
    return Service("served", "served", f"http://127.0.0.1:{port}", process.pid, settings, stop,
                   round(time.monotonic() - started, 1))


def start_naive(model: Path, log_dir: Path, workers: int = 1) -> Service:
    from heat_platform.processes import stop_process_group
    from heat_platform.serving.server import free_port

    port = free_port()
    env = {**os.environ, "NAIVE_MODEL_PATH": str(model), "NAIVE_TORCH_THREADS": str(TORCH_THREADS)}
    command = [sys.executable, "-m", "uvicorn", "naive_service:app", "--app-dir", str(BENCH_DIR),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log_path = log_dir / f"naive-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)

    def stop() -> None:
        stop_process_group(process, grace_s=15)

    import httpx

    url, started = f"http://127.0.0.1:{port}", time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"naive server exited:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                break
        if time.monotonic() - started > 120:
            stop()
            raise TimeoutError(f"naive server not ready:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.25)
    settings = {"server": "uvicorn (FastAPI, sync endpoints in its thread pool)",
                "command": " ".join(command[1:]).replace(str(BENCH_DIR), "bench"),
                "env": {"NAIVE_TORCH_THREADS": str(TORCH_THREADS)},
                "notes": "uvicorn defaults: uvloop + httptools, access log on; answers u only"}
    label = "naive" if workers == 1 else f"naive-workers{workers}"
    return Service(label, "naive", url, process.pid, settings, stop,
                   round(time.monotonic() - started, 1))


def same_answers(services: list[Service]) -> dict:
    """Both kinds of server serve the same network: compare u at a few points."""
    import httpx
    import numpy as np

    points = [[0.1, -0.3, 0.2], [-0.7, 0.5, 0.9], [0.9, 0.9, 0.0]]
    answers, binary = {}, {}
    for service in services:
        batch = httpx.post(f"{service.url}/predict", json={"points": points}, timeout=30).json()
        single = httpx.get(f"{service.url}/predict-temperature",
                           params=dict(zip("xyt", points[0], strict=True)), timeout=30).json()
        answers[service.label] = batch["u"] + [single["u"]]
        if service.kind != "naive":  # the raw float32 route answers the same (float32) u
            raw = httpx.post(f"{service.url}/predict-binary", timeout=30,
                             content=np.asarray(points, "<f4").tobytes(),
                             headers={"content-type": "application/octet-stream"}).content
            binary[service.label] = np.frombuffer(raw[:4 * len(points)], "<f4").tolist()
    reference = next(iter(answers.values()))
    diff = max(abs(a - b) for values in answers.values() for a, b in zip(values, reference,
                                                                           strict=True))
    binary_diff = max(abs(a - b) for values in binary.values()
                      for a, b in zip(values, reference, strict=False))
    return {"points": points, "u": answers, "max_abs_difference": diff,
            "u_binary": binary, "max_abs_difference_binary": binary_diff}


# --- the load generator (runs in its own spawned process) ----------------------------------


def payloads(kind: str, domain: dict[str, list[float]], seed: int = 7) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    lo = np.array([domain[a][0] for a in "xyt"])
    hi = np.array([domain[a][1] for a in "xyt"])
    if kind == "single":
        points = lo + (hi - lo) * rng.random((512, 3))
        return [f"/predict-temperature?x={x:.6f}&y={y:.6f}&t={t:.6f}" for x, y, t in points]
    if kind == "binary":
        return [(lo + (hi - lo) * rng.random((BATCH_POINTS, 3))).astype("<f4").tobytes()
                for _ in range(8)]
    return [json.dumps({"points": np.round(lo + (hi - lo) * rng.random((BATCH_POINTS, 3)),
                                           6).tolist()}).encode() for _ in range(8)]


def cpu_seconds(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """CPU seconds (user + system) of each process tree, by role of the process in it."""
    import psutil

    totals = {}
    for label, pid in pids.items():
        roles: dict[str, float] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times, command = process.cpu_times(), " ".join(process.cmdline())
                    role = ("main" if process.pid == pid else "model_workers"
                            if "heat_models" in command else "proxy"
                            if "haproxy" in command else "backend_arbiter"
                            if " serve " in command and "bentoml" in command
                            and process.pid != pid else "front_workers")
                    roles[role] = roles.get(role, 0.0) + times.user + times.system
        totals[label] = roles
    return totals


def run_scenario(url: str, kind: str, concurrency: int, domain: dict[str, list[float]],
                 warmup: int, duration: float, max_requests: int, pids: dict[str, int],
                 under_test: str, kind_of_service: str) -> dict:
    """Entry point of the load-generator process: one scenario against one service."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(url, kind, concurrency, domain, warmup, duration, max_requests,
                                 pids, under_test, kind_of_service))


async def _drive(url: str, kind: str, concurrency: int, domain: dict[str, list[float]],
                 warmup: int, duration: float, max_requests: int, pids: dict[str, int],
                 under_test: str, kind_of_service: str) -> dict:
    import collections

    import aiohttp
    import numpy as np
    import psutil

    bodies = payloads(kind, domain)
    # POST scenarios: route and content type of their bodies
    posts = {"batch": ("/predict", {"content-type": "application/json"}),
             "binary": ("/predict-binary", {"content-type": "application/octet-stream"})}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    counter = {"started": 0}

    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def call(i: int) -> tuple[int, bytes]:
            if kind == "single":
                async with session.get(bodies[i % len(bodies)]) as response:
                    return response.status, await response.read()
            path, headers = posts[kind]
            async with session.post(path, data=bodies[i % len(bodies)],
                                    headers=headers) as response:
                return response.status, await response.read()

        async def warm(worker: int) -> int:
            bad = 0
            for i in range(worker, warmup, concurrency):
                status, body = await call(i)
                if kind == "binary":  # n float32 u values, then n in_domain bytes
                    bad += not (status == 200 and len(body) == 5 * BATCH_POINTS)
                    continue
                u = json.loads(body).get("u") if status == 200 else None
                expected = isinstance(u, float) if kind == "single" else (
                    isinstance(u, list) and len(u) == BATCH_POINTS)
                bad += not expected
            return bad

        warm_bad = sum(await asyncio.gather(*(warm(w) for w in range(concurrency))))

        async def client(deadline: float) -> None:
            while time.perf_counter() < deadline and counter["started"] < max_requests:
                i = counter["started"]
                counter["started"] += 1
                start = time.perf_counter()
                try:
                    status, _ = await call(i)
                except Exception as error:  # transport failures count as errors
                    errors[type(error).__name__] += 1
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[f"HTTP {status}"] += 1

        measured = kind_of_service in ("bento", "served")
        batching_before = await batching(session) if measured else None
        load_before = os.getloadavg()
        cpu_before, machine_before = cpu_seconds(pids), psutil.cpu_times()
        client_before = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(client(start + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client_before
        cpu_after, machine_after = cpu_seconds(pids), psutil.cpu_times()
        load_after = os.getloadavg()
        batching_after = await batching(session) if measured else None

    ok = len(latencies)
    total = ok + sum(errors.values())
    ms = np.array(latencies) * 1000 if ok else np.array([np.nan])
    points = 1 if kind == "single" else BATCH_POINTS
    busy = lambda t: t.user + t.nice + t.system + t.irq + t.softirq + t.steal  # noqa: E731
    used = {label: {role: seconds - cpu_before[label].get(role, 0.0)
                    for role, seconds in roles.items()} for label, roles in cpu_after.items()}
    server_cpu = sum(used[under_test].values())
    idle_servers = sum(sum(used[label].values()) for label in pids if label != under_test)
    machine_busy = busy(machine_after) - busy(machine_before)
    return {
        "requests": total,
        "ok": ok,
        "errors": sum(errors.values()),
        "error_rate": round(sum(errors.values()) / total, 6) if total else None,
        "error_kinds": dict(errors),
        "warmup_requests": warmup,
        "warmup_bad_answers": warm_bad,
        "duration_s": round(elapsed, 3),
        "requests_per_s": round(ok / elapsed, 1),
        "points_per_s": round(ok * points / elapsed, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p95": round(float(np.percentile(ms, 95)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3),
            "max": round(float(ms.max()), 3),
        },
        "cpu_cores_used": {
            "client": round(client_cpu / elapsed, 2),
            "server_under_test": round(server_cpu / elapsed, 2),
            "server_by_process": {role: round(seconds / elapsed, 2)
                                  for role, seconds in sorted(used[under_test].items())},
            "idle_servers": round(idle_servers / elapsed, 2),
            "whole_machine": round(machine_busy / elapsed, 2),
            "everything_else": round((machine_busy - client_cpu - server_cpu - idle_servers)
                                     / elapsed, 2),
        },
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        **({} if batching_before is None else {"adaptive_batching": {
            "infer_calls": round(batching_after[0] - batching_before[0]),
            "mean_requests_per_call": round((batching_after[1] - batching_before[1])
                                        / max(1.0, batching_after[0] - batching_before[0]), 1)}}),
    }


async def batching(session) -> tuple[float, float]:
    """(calls, rows) of the model service's batchable ``infer`` so far, from /metrics."""
    async with session.get("/metrics") as response:
        text = await response.text()
    totals = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for part in totals:
            if (line.startswith(f"bentoml_service_adaptive_batch_size_{part}{{")
                    and 'method_name="infer"' in line):
                totals[part] += float(line.rsplit(" ", 1)[1])
    return totals["count"], totals["sum"]


# --- targets --------------------------------------------------------------------------------


def user_path_targets(results: dict, baseline: str) -> dict:
    """The user path against the direct ``baseline`` at 16 clients, single points and 1000-point
    JSON batches: p95 within 1.25x, throughput at least 0.8x."""
    judged = {}
    for kind in ("single", "batch", "binary"):
        served, direct = (scenario(results, label, kind, 16) for label in ("served", baseline))
        p95 = served["latency_ms"]["p95"] / direct["latency_ms"]["p95"]
        throughput = served["points_per_s"] / direct["points_per_s"]
        judged[kind] = {
            "served_p95_ms": served["latency_ms"]["p95"],
            "direct_p95_ms": direct["latency_ms"]["p95"],
            "p95_ratio": round(p95, 3),
            "served_points_per_s": served["points_per_s"],
            "direct_points_per_s": direct["points_per_s"],
            "throughput_ratio": round(throughput, 3),
            "pass": bool(p95 <= USER_PATH_TARGETS["p95_ratio_max"]
                         and throughput >= USER_PATH_TARGETS["throughput_ratio_min"]),
        }
    judged["judged"] = "single and batch (JSON); binary recorded, not judged"
    judged["pass"] = judged["single"]["pass"] and judged["batch"]["pass"]
    return judged


def scenario(results: dict, label: str, kind: str, concurrency: int) -> dict:
    return results[label][f"{kind}_c{concurrency}"]


def check_targets(results: dict, label: str, naive: list[str]) -> dict:
    """Each target with the measured figure and pass/fail for the bento configuration ``label``;
    "ahead of naive" is judged against the best of the ``naive`` servers."""
    p95_16 = scenario(results, label, "single", 16)["latency_ms"]["p95"]
    naive_p95_16 = min(scenario(results, n, "single", 16)["latency_ms"]["p95"] for n in naive)
    best = max(scenario(results, label, "batch", c)["points_per_s"] for c in CONCURRENCIES)
    best_binary = max(scenario(results, label, "binary", c)["points_per_s"]
                      for c in CONCURRENCIES)
    naive_best = max(scenario(results, n, "batch", c)["points_per_s"]
                     for n in naive for c in CONCURRENCIES)
    slo = {name: {"p95_ms": s["latency_ms"]["p95"], "error_rate": s["error_rate"],
                  "pass": bool(s["latency_ms"]["p95"] < TARGETS["slo_p95_ms_max"]
                               and s["error_rate"] is not None
                               and s["error_rate"] < TARGETS["slo_error_rate_max"])}
           for name, s in results[label].items()}
    targeted = [name for name, *_, warm in SCENARIOS if warm]
    return {
        "single_point_p95_at_16_clients_below_20_ms": {
            "measured_ms": p95_16, "pass": p95_16 < TARGETS["single_p95_ms_at_16_clients_max"]},
        "batch_throughput_at_least_1e6_points_per_s": {
            "measured_points_per_s": max(best, best_binary),
            "json_points_per_s": best, "binary_points_per_s": best_binary,
            "best_of_concurrencies": list(CONCURRENCIES),
            "pass": max(best, best_binary) >= TARGETS["batch_points_per_s_min"],
            "pass_over_json": best >= TARGETS["batch_points_per_s_min"]},
        "ahead_of_naive_single_point_p95_at_16_clients": {
            "bento_ms": p95_16, "naive_ms": naive_p95_16, "pass": p95_16 < naive_p95_16},
        "ahead_of_naive_batch_points_per_s": {
            "bento": best, "naive": naive_best, "pass": best > naive_best,
            "compared": "JSON against JSON (the naive service has no binary route)"},
        "slo_floor_p95_below_200_ms_and_error_rate_below_0.1_percent": {
            "per_scenario": {name: slo[name] for name in targeted},
            "pass": all(slo[name]["pass"] for name in targeted),
            "not_judged_after_load": {name: value for name, value in slo.items()
                                      if name not in targeted}},
    }


# --- driver ---------------------------------------------------------------------------------


def machine(load_at_start: tuple[float, float, float], started: float) -> dict:
    """The machine, the versions that matter and its load over the run."""
    return machine_info(load_at_start, ("torch", "bentoml", "fastapi", "uvicorn", "aiohttp",
                                        "numpy"),
                        wall_time_s=round(time.perf_counter() - started, 1))


def parse_bento_config(text: str) -> tuple[str, dict[str, str]]:
    """``label:KEY=VALUE,KEY=VALUE`` -> (label, env overrides)."""
    label, _, pairs = text.partition(":")
    overrides = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    if not label or label in ("bento", "naive"):
        raise SystemExit(f"--bento-config: bad label in {text!r}")
    return "bento-" + label, overrides


def log_warnings(logs: Path, service: Service) -> list[str]:
    """Warnings and errors a server logged (its access lines left out), the last 20."""
    port = service.url.rsplit(":", 1)[1]
    lines = []
    for path in sorted(logs.glob(f"*{port}*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(word in line for word in ("ERROR", "Error", "WARNING", "Traceback")):
                lines.append(line[:300])
    return lines[-20:]


def print_table(results: dict) -> None:
    print(f"{'service':<24}{'scenario':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'req/s':>9}{'points/s':>12}{'err':>6}{'client':>8}{'server':>8}{'machine':>8}")
    for label, scenarios in results.items():
        for name, s in scenarios.items():
            lat, cores = s["latency_ms"], s["cpu_cores_used"]
            print(f"{label:<24}{name:<22}{lat['p50']:>9.2f}{lat['p95']:>9.2f}{lat['p99']:>9.2f}"
                  f"{s['requests_per_s']:>9.0f}{s['points_per_s']:>12.0f}{s['errors']:>6}"
                  f"{cores['client']:>8.2f}{cores['server_under_test']:>8.2f}"
                  f"{cores['whole_machine']:>8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0,
                        help="measured seconds per scenario and service")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="cap on measured requests per scenario and service")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up requests per scenario (default max(50, 4 x clients))")
    parser.add_argument("--bento-config", action="append", default=None, metavar="LABEL:K=V,...",
                        help="an additional bento configuration (repeatable; default: "
                             + ", ".join(EXTRA_CONFIGS) + ")")
    parser.add_argument("--default-only", action="store_true",
                        help="measure the default bento configuration only (and naive)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1.5 s per scenario")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 1.5, args.warmup or 10
    configs = [] if args.default_only else (args.bento_config or EXTRA_CONFIGS)
    baseline_config = next(c for c in EXTRA_CONFIGS if "bento-" + c.split(":")[0]
                           == USER_PATH_BASELINE)
    if baseline_config not in configs:
        configs = [baseline_config, *configs]
    extra = [parse_bento_config(text) for text in configs]

    # The service reads these; the bench measures the default service: no serving log, no key.
    for name in ("HEAT_SERVING_LOG_DIR", "HEAT_SERVING_API_KEY"):
        os.environ.pop(name, None)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped

    load_at_start = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="heat-bench-serving-") as tmp, \
            contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        model, domain, model_facts = train_model(workdir)
        ceiling = model_only(model)
        bento_started = time.perf_counter()
        bento = build(workdir / "bentoml", model, domain)
        build_s = time.perf_counter() - bento_started
        print(f"model trained, bento {bento} built in {build_s:.1f} s", flush=True)

        services: list[Service] = [start_served(bento, workdir / "bentoml", workdir, logs)]
        stack.callback(services[0].stop)
        for label, overrides in [("bento", {}), *extra]:
            # `bentoml serve` empties <BENTOML_HOME>/prometheus_multiproc_dir when it starts: a
            # store of its own per server keeps each server's /metrics its own.
            home = workdir / f"bentoml-{label}"
            shutil.copytree(workdir / "bentoml", home)
            services.append(start_bento(label, bento, home, logs, overrides))
            stack.callback(services[-1].stop)
        # The design's listing runs one uvicorn process; with one per core it is measured too,
        # since the bento's default is one front worker per core.
        cores = os.cpu_count() or 1
        naive: list[Service] = []
        for workers in sorted({1, cores}):
            naive.append(start_naive(model, logs, workers))
            stack.callback(naive[-1].stop)
        services[2:2] = naive
        check = same_answers(services)
        pids = {service.label: service.pid for service in services}
        print("servers ready:", {s.label: s.url for s in services}, flush=True)

        results: dict[str, dict] = {service.label: {} for service in services}
        load = {service.label: {"before": None, "after": None} for service in services}
        loadgen = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
        for name, kind, concurrency, warm in SCENARIOS:
            warmup = (args.warmup or max(50, 4 * concurrency)) if warm else 0
            for service in services:
                if kind == "binary" and service.kind == "naive":
                    continue
                load[service.label]["before"] = load[service.label]["before"] or [
                    round(v, 2) for v in os.getloadavg()]
                results[service.label][name] = {
                    "clients": concurrency,
                    "points_per_request": 1 if kind == "single" else BATCH_POINTS,
                    **({"format": "float32 (x, y, t) triples, application/octet-stream"}
                       if kind == "binary" else {}),
                    **loadgen.submit(run_scenario, service.url, kind, concurrency, domain, warmup,
                                     args.duration, args.max_requests, pids,
                                     service.label, service.kind).result(),
                }
                load[service.label]["after"] = [round(v, 2) for v in os.getloadavg()]
                s = results[service.label][name]
                print(f"{service.label:<24}{name:<22} p95 {s['latency_ms']['p95']:8.2f}"
                      f" ms  {s['requests_per_s']:8.0f} req/s  errors {s['errors']}", flush=True)
        server_logs = {s.label: log_warnings(logs, s) for s in services}

    report = {
        "benchmark": ("heat service over HTTP on loopback: the user path (heat-platform serve), "
                      "the bento direct and its variants, naive FastAPI + uvicorn"),
        "statistic": ("closed-loop clients; latency from request sent to answer read, over "
                      "successful answers; throughput over the measured window"),
        "command": "python bench/serving.py " + " ".join(sys.argv[1:]),
        "parameters": {
            "duration_s_per_scenario": args.duration,
            "max_requests_per_scenario": args.max_requests,
            "warmup_requests": args.warmup or "max(50, 4 x clients)",
            "concurrencies": list(CONCURRENCIES),
            "batch_points": BATCH_POINTS,
            "order": "scenario by scenario, every service in turn; all servers up throughout",
            "load_generator": ("one spawned process, asyncio on uvloop + aiohttp "
                               f"{version('aiohttp')}, TCPConnector(limit=clients), bodies "
                               "pre-serialised, answers read not parsed (warm-up answers "
                               "checked); requests to 127.0.0.1 only"),
            "shared_cores": ("client and servers share the machine's cores "
                             f"({os.cpu_count()}); cpu_cores_used per scenario shows who used "
                             "them (everything_else: other work on the machine)"),
            "model": model_facts,
            "domain": domain,
        },
        "services": {s.label: {"kind": s.kind, "ready_after_s": s.ready_s, **s.settings}
                     for s in services},
        "bento_build_s": round(build_s, 1),
        "model_only_one_thread": ceiling,
        "same_answers": check,
        "targets": TARGETS,
        "headline": {
            "user_path": "served (heat-platform serve)",
            "user_path_vs_direct": user_path_targets(results, USER_PATH_BASELINE),
            "user_path_vs_default_bento": user_path_targets(results, "bento"),
            "user_path_targets": USER_PATH_TARGETS,
            "baseline": USER_PATH_BASELINE},
        "target_results": {
            s.label: check_targets(results, s.label, [n.label for n in services
                                                       if n.kind == "naive"])
            for s in services if s.kind in ("bento", "served")},
        "results": results,
        "load_average_per_service": load,
        "server_log_warnings": server_logs,
        "machine": machine(load_at_start, started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results)
    print(json.dumps(report["headline"], indent=2))
    print(json.dumps({label: {name: value["pass"] for name, value in targets.items()}
                      for label, targets in report["target_results"].items()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
