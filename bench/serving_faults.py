"""Faults and hostile clients under load, on the user path (`heat-platform serve`): what fails,
for how long, and what it costs in memory.

A tiny PINN (as bench/serving.py's) is served by `heat-platform serve` on a temporary platform
home, from two bentos of the same model (``a`` and ``b``, so a blue/green switch has somewhere to
go). Load comes from threads of keep-alive clients in this process (GET /predict-temperature,
paced or back to back), every answer recorded with its time; a sampler records the resident
memory of the proxy, of the backends and of the supervisor every 0.25 s. Scenarios, in turn:

* ``kill_backend``: ``kill -9`` of every process of the live backend, ``--kills`` times, 4
  clients x 20 requests/s (the load of issue 24's measurement). Per kill: failed requests and
  the seconds from the kill to the first answer after it (recovery);
* ``kill_arbiter``: ``kill -9`` of BentoML's arbiter alone (its workers orphaned), twice: the
  orphans serve until a replacement takes over;
* ``blue_green``: ``--switches`` switches between the two bentos under 16 back-to-back clients;
* ``hostile``: for ``--hostile-seconds``, 4 paced clients while 20 slow-loris connections (a
  header line every 0.5 s), 5 endless chunked bodies, 5 bodies declaring 2 GB and 5 slow bodies
  run again and again; answers the hostile clients got, failures of the others, peak memory.

Run from the repository root (needs haproxy: apt-get install haproxy):
    .venv/bin/python bench/serving_faults.py            # ~6 min -> bench/results/serving_faults.json
    .venv/bin/python bench/serving_faults.py --kills 1 --switches 2 --hostile-seconds 10 --out /tmp/f.json

History: bench/RESULTS.md#serving-faults
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "serving_faults.json"
EXPERIMENT = "bench-heatinv"
MiB = 2**20


class Load:
    """``clients`` keep-alive clients in threads, ``rate`` requests/s each (None: back to back);
    every answer as (time, status)."""

    def __init__(self, url: str, clients: int, rate: float | None) -> None:
        self.url, self.rate = url, rate
        self.stop_event = threading.Event()
        self.outcomes: list[tuple[float, int]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        import httpx

        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stop_event.is_set():
                if self.rate:
                    next_at += 1.0 / self.rate
                    self.stop_event.wait(max(0.0, next_at - time.monotonic()))
                try:
                    status = client.get("/predict-temperature",
                                        params={"x": 0.1, "y": -0.3, "t": 0.2}).status_code
                except httpx.HTTPError:
                    status = 0
                self.outcomes.append((time.monotonic(), status))

    def count_ok(self) -> int:
        return sum(status == 200 for _, status in list(self.outcomes))

    def wait_ok(self, more: int, timeout_s: float = 120) -> None:
        target, deadline = self.count_ok() + more, time.monotonic() + timeout_s
        while self.count_ok() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {more} answers in {timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> list[tuple[float, int]]:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return self.outcomes


class Memory:
    """Peak resident memory of each role under the supervisor, sampled every 0.25 s."""

    def __init__(self, supervisor: int) -> None:
        self.supervisor = supervisor
        self.peak: dict[str, int] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(0.25):
            for role, value in self.current(raw=True).items():
                self.peak[role] = max(self.peak.get(role, 0), value)

    def current(self, raw: bool = False) -> dict:
        """Resident memory of each role now (MiB, or bytes with ``raw``)."""
        import psutil

        totals: dict[str, int] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.supervisor)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    command = " ".join(process.cmdline())
                    role = ("supervisor" if process.pid == self.supervisor else "proxy"
                            if "haproxy" in command else "backends")
                    totals[role] = totals.get(role, 0) + process.memory_info().rss
        return totals if raw else {role: round(value / MiB, 1)
                                   for role, value in sorted(totals.items())}

    def take(self) -> dict[str, float]:
        """Peaks since the last take, in MiB."""
        peak, self.peak = self.peak, {}
        return {role: round(value / MiB, 1) for role, value in sorted(peak.items())}

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


class Served:
    """`heat-platform serve` on its own home, serving bento ``a`` first."""

    def __init__(self, workdir: Path, store: Path, bentos: dict[str, str]) -> None:
        from heat_platform.paths import PlatformPaths
        from heat_platform.serving.rollout import write_desired_deployment
        from heat_platform.serving.server import free_port

        self.paths = PlatformPaths(workdir / "home")
        self.bentos = bentos
        import shutil

        shutil.copytree(store, self.paths.bentoml_home)
        write_desired_deployment(self.paths, self.deployment("a"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HEAT_SERVING_")},
               "HEAT_SERVING_MODEL_WORKERS": "1", "HEAT_PLATFORM_ENV_FILE": "",
               "HEAT_SERVING_BODY_TIMEOUT": "5", "HEAT_SERVING_MAX_BODY_BYTES": str(MiB)}
        self.log = workdir / "serve.log"
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("heat-platform")), "--home",
                 str(self.paths.home), "serve", "--port", str(self.port), "--poll", "0.5"],
                stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.settings = {k: v for k, v in env.items() if k.startswith("HEAT_SERVING_")}

    def deployment(self, which: str) -> dict:
        return {"bento": self.bentos[which], "default": EXPERIMENT, "published_at": time.time()}

    def live(self) -> dict:
        from heat_platform.serving.rollout import live_state_path, read_json

        return read_json(live_state_path(self.paths)) or {}

    def wait_live(self, condition=lambda state: True, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.live()
            if state.get("status") == "live" and condition(state):
                return state
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no live backend:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def live_backends(self) -> list[int]:
        """Pids of the `bentoml serve` arbiters under the supervisor."""
        import psutil

        return [child.pid for child in psutil.Process(self.process.pid).children()
                if "bentoml" in " ".join(child.cmdline())]

    def stop(self) -> None:
        from heat_platform.processes import stop_process_group

        stop_process_group(self.process, grace_s=90)


def failures(outcomes: list[tuple[float, int]], start: float, end: float) -> dict:
    window = [(at, status) for at, status in outcomes if start <= at <= end]
    failed = [(at, status) for at, status in window if status != 200]
    statuses: dict[str, int] = {}
    for _, status in failed:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"requests": len(window), "failed": len(failed), "failed_by_status": statuses}


def kill_under_load(served: Served, memory: Memory, kills: int, whole_backend: bool) -> dict:
    """``kill -9`` the live backend ``kills`` times under 4 clients at 20 requests/s each:
    every process of it (``whole_backend``), or its arbiter alone (its workers orphaned, which
    the supervisor must reap and replace). Per kill: the failed requests, when the answers came
    back, when the supervisor had a new backend live, the peak memory."""
    from heat_platform.processes import tagged_processes

    load = Load(served.url, clients=4, rate=20)
    runs = []
    try:
        load.wait_ok(200)
        for _ in range(kills):
            before = served.wait_live()
            memory.take()
            killed_at = time.monotonic()
            # the whole backend: its arbiter and its workers, which BentoML starts in sessions
            # of their own (a signal to the arbiter's group reaches it alone)
            victims = (tagged_processes(before["backend_tag"]) if whole_backend
                       else [before["backend_pid"]])
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            after = served.wait_live(lambda s, pid=before["backend_pid"]: s["backend_pid"] != pid)
            replaced = time.monotonic()
            load.wait_ok(400)  # 5 s of normal service before the next kill
            outcomes = [(at, status) for at, status in list(load.outcomes) if at >= killed_at]
            last_failure = max((at for at, status in outcomes if status != 200),
                               default=killed_at)
            # recovered: the first answer after the last failure (answers to requests that were
            # in flight at the kill can come before the failures)
            answered = min(at for at, status in outcomes if status == 200 and at > last_failure)
            runs.append({**failures(load.outcomes, killed_at, time.monotonic()),
                         "recovery_s": round(answered - killed_at, 2),
                         "replaced_after_s": round(replaced - killed_at, 2),
                         "ready_after_s": after.get("ready_after_s"),
                         "peak_memory_mib": memory.take()})
    finally:
        outcomes = load.stop()
    return {"clients": 4, "rate_per_client": 20, "kills": runs,
            "total": failures(outcomes, 0, float("inf"))}


def blue_green(served: Served, memory: Memory, switches: int) -> dict:
    from heat_platform.serving.rollout import write_desired_deployment

    load = Load(served.url, clients=16, rate=None)
    runs = []
    started = time.monotonic()
    try:
        load.wait_ok(200)
        for index in range(switches):
            which = "b" if index % 2 == 0 else "a"
            switched_at = time.monotonic()
            write_desired_deployment(served.paths, served.deployment(which))
            served.wait_live(lambda s, tag=served.bentos[which]: s["bento"] == tag)
            runs.append({"to": which, "switch_s": round(time.monotonic() - switched_at, 2)})
            load.wait_ok(500)
    finally:
        outcomes = load.stop()
    return {"clients": 16, "rate_per_client": "back to back", "switches": runs,
            **failures(outcomes, started, float("inf")), "peak_memory_mib": memory.take()}


def hostile(served: Served, memory: Memory, seconds: float) -> dict:
    """Hostile clients next to paced normal ones, for ``seconds``."""
    stop = threading.Event()
    answers: dict[str, dict[str, int]] = {}
    lock = threading.Lock()

    def note(kind: str, status: str) -> None:
        with lock:
            answers.setdefault(kind, {})
            answers[kind][status] = answers[kind].get(status, 0) + 1

    def client(kind: str, head: bytes, pieces, pause_s: float) -> None:
        while not stop.is_set():
            status = "no answer"
            try:
                with socket.create_connection(("127.0.0.1", served.port), timeout=30) as conn:
                    conn.sendall(head)
                    conn.settimeout(pause_s or 0.001)
                    data = b""
                    for piece in pieces():
                        if stop.is_set():
                            break
                        try:
                            data += conn.recv(4096)
                            if data:
                                break
                        except (TimeoutError, BlockingIOError):
                            pass
                        conn.sendall(piece)
                    conn.settimeout(30)
                    while b"\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    status = data.split(b" ", 2)[1].decode() if data.count(b" ") >= 2 else \
                        "closed"
            except OSError:
                status = "closed"
            note(kind, status)

    chunk = b"10000\r\n" + b"1" * 0x10000 + b"\r\n"
    kinds = {
        "slow_loris": (20, b"GET /livez HTTP/1.1\r\n", lambda: iter(lambda: b"x-a: b\r\n", None),
                       0.5),
        "endless_chunked_body": (5, b"POST /predict HTTP/1.1\r\nHost: t\r\ncontent-type: "
                                 b"application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                                 lambda: iter(lambda: chunk, None), 0.0),
        "declares_2_gb": (5, b"POST /predict HTTP/1.1\r\nHost: t\r\ncontent-length: "
                          b"2000000000\r\n\r\n", lambda: iter(lambda: chunk, None), 0.0),
        "slow_body": (5, b"POST /predict HTTP/1.1\r\nHost: t\r\ncontent-length: 100\r\n\r\n",
                      lambda: iter(lambda: b"{", None), 0.5),
    }
    load = Load(served.url, clients=4, rate=20)
    load.wait_ok(100)
    served.wait_live()
    while len(served.live_backends()) > 1:  # the last switch's old backend still stopping
        time.sleep(0.5)
    before = memory.current()
    memory.take()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(kind, head, pieces, pause), daemon=True)
               for kind, (count, head, pieces, pause) in kinds.items() for _ in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    outcomes = load.stop()
    return {"seconds": seconds, "hostile_connections": {k: v[0] for k, v in kinds.items()},
            "answers_to_hostile_clients": answers, "normal_clients": "4 x 20/s",
            **failures(outcomes, started, float("inf")), "memory_before_mib": before,
            "peak_memory_mib": memory.take()}


def build_bentos(workdir: Path) -> tuple[Path, dict[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serving import train_model

    from heat_platform.serving.bento import ServedModel, build_bento

    model, domain, _ = train_model(workdir)
    served = ServedModel(experiment=EXPERIMENT, torchscript=model,
                         mlflow_model_name="heat-pinn-bench", mlflow_model_version="1",
                         mlflow_run_id=uuid.uuid4().hex, data_version="bench",
                         dagster_run_id="bench", domain=domain)
    store = workdir / "bentoml"
    return store, {which: build_bento(store, [served], EXPERIMENT, f"faults-{which}")
                   for which in ("a", "b")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--hostile-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_at_start, started = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="heat-bench-faults-") as tmp:
        workdir = Path(tmp)
        store, bentos = build_bentos(workdir)
        served = Served(workdir, store, bentos)
        memory = Memory(served.process.pid)
        try:
            first = served.wait_live()
            results = {"started_s": first.get("ready_after_s")}
            for name, run in (("kill_backend", lambda: kill_under_load(served, memory, args.kills,
                                                                       whole_backend=True)),
                              ("kill_arbiter", lambda: kill_under_load(served, memory, 2,
                                                                       whole_backend=False)),
                              ("blue_green", lambda: blue_green(served, memory, args.switches)),
                              ("hostile", lambda: hostile(served, memory,
                                                          args.hostile_seconds))):
                load = [round(v, 2) for v in os.getloadavg()]
                results[name] = {**run(), "load_average_before": load,
                                 "load_average_after": [round(v, 2) for v in os.getloadavg()]}
                print(name, json.dumps(results[name]), flush=True)
        finally:
            memory.stop()
            served.stop()
        settings = served.settings
    report = {
        "benchmark": "faults and hostile clients under load on heat-platform serve",
        "command": "python bench/serving_faults.py " + " ".join(sys.argv[1:]),
        "settings": settings,
        "statistic": ("outcomes of GET /predict-temperature from keep-alive clients in threads "
                      "of the bench process; failed = any answer but 200, or none; recovery = "
                      "kill to the first 200 after it; memory = peak RSS per role, sampled "
                      "every 0.25 s"),
        "results": results,
        "machine": machine_info(load_at_start, ("bentoml", "httpx"),
                                wall_time_s=round(time.perf_counter() - started, 1),
                                haproxy=subprocess.run(["haproxy", "-v"], capture_output=True,
                                                       text=True, check=False
                                                       ).stdout.splitlines()[0]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
