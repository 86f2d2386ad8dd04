"""The serving path under faults: backends killed under load, a bento that will not start, a
supervisor killed, hostile clients. Figures are printed as JSON lines (pytest -s shows them);
the longer runs are bench/serving_faults.py's."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from heat_platform.polling import wait_until
from heat_platform.processes import tagged_processes
from heat_platform.serving.rollout import (
    desired_deployment_path,
    read_json,
    write_desired_deployment,
)
from heat_platform_tests.faults.conftest import raw_request, rss, serve
from heat_platform_tests.serving.traffic import Traffic

pytestmark = [pytest.mark.server, pytest.mark.slow]

MiB = 2**20
# What an endless body can have sent when its 413 comes: the 1 MiB limit plus what the
# loopback's socket buffers (client, proxy, service) hold, a few MiB each at most.
SENT_AT_MOST = 16 * MiB


def report(name: str, **figures) -> None:
    print(json.dumps({"fault": name, **figures}))


def summary(outcomes: list, since: float) -> dict[str, list[float]]:
    """Failures by kind: (count, first and last second after ``since``)."""
    kinds: dict[str, list[float]] = {}
    for outcome in outcomes:
        seconds = round(outcome.at - since, 2)
        kind = kinds.setdefault(f"{outcome.status} {outcome.bento[:60]}", [0, seconds, seconds])
        kind[0] += 1
        kind[2] = seconds
    return kinds


def test_a_live_backend_killed_under_load_comes_back(served):
    running = served()
    first = running.wait_live()
    with Traffic(running.url, clients=4, rate=20) as traffic:  # 80 requests/s
        wait_until(lambda: traffic.count() >= 100, timeout_s=30, what="traffic")
        killed_at = time.monotonic()
        for pid in tagged_processes(first["backend_tag"]):  # every process of the backend
            os.kill(pid, signal.SIGKILL)
        second = running.wait_live(lambda s: s["backend_pid"] != first["backend_pid"])
        after = traffic.count()
        wait_until(lambda: traffic.count() >= after + 100, timeout_s=30, what="traffic")

        # the arbiter alone: its workers still answer, so they serve until the replacement
        # is live, which then takes over; nothing fails
        orphaned_from = time.monotonic()
        os.kill(second["backend_pid"], signal.SIGKILL)
        third = running.wait_live(lambda s: s["backend_pid"] != second["backend_pid"])
        wait_until(lambda: not tagged_processes(second["backend_tag"]), timeout_s=30,
                   what="the orphaned workers to be stopped")
        after = traffic.count()
        wait_until(lambda: traffic.count() >= after + 50, timeout_s=30, what="traffic")
    outcomes = traffic.outcomes
    failed = [o for o in outcomes if o.status != 200]
    assert failed and all(killed_at <= o.at < orphaned_from for o in failed), \
        (summary(failed, killed_at), orphaned_from - killed_at, running.log_tail())
    # while no backend is live the proxy answers 503; only requests a backend was answering
    # when it was killed (the first instant) got no answer at all
    assert all(o.status == 503 or (o.status == 0 and o.at - killed_at < 1.0) for o in failed), \
        summary(failed, killed_at)
    recovered = min(o.at for o in outcomes if o.status == 200 and o.at > failed[-1].at)
    assert not tagged_processes(first["backend_tag"])
    assert (third["restarts"], third["switches"]) == (2, 3)
    report("kill -9 of the live backend's processes, 4 clients x 20/s",
           requests=len(outcomes), failed=len(failed), by_kind=summary(failed, killed_at),
           recovery_s=round(recovered - killed_at, 2),
           failed_after_killing_the_arbiter_alone=0)


def test_a_bento_that_does_not_start_leaves_the_live_one_serving(served, deployed):
    running = served()
    live = running.wait_live()
    original = read_json(desired_deployment_path(deployed.paths))
    try:
        with Traffic(running.url) as traffic:
            write_desired_deployment(deployed.paths, {**original, "bento": "heat_service:nope",
                                                      "published_at": time.time()})
            time.sleep(12)  # a first try at once, the next one only after 10 s
            starts = running.log.read_text().count("starting heat_service:nope")
        assert starts <= 2, running.log_tail()
        assert "heat_service:nope" in running.log.read_text()  # the failure is said
        assert running.live()["bento"] == live["bento"]
        assert traffic.failures() == [] and traffic.count() > 100
    finally:
        write_desired_deployment(deployed.paths, original)


def test_a_killed_supervisor_leaves_nothing_the_next_one_does_not_clean_up(served, tmp_path):
    first = served()
    before = first.wait_live()
    orphans = first.tags()
    first.process.send_signal(signal.SIGKILL)  # HAProxy and bentoml serve are orphaned
    first.process.wait(timeout=10)
    assert all(tagged_processes(tag) for tag in orphans) and len(orphans) == 2
    assert httpx.get(f"{first.url}/livez", timeout=5).status_code == 200  # still answering

    second = served(port=first.port)
    after = second.wait_live()
    assert not any(tagged_processes(tag) for tag in orphans)
    assert after["backend_pid"] != before["backend_pid"]
    assert "left by an earlier `heat-platform serve`" in second.log.read_text()
    # two supervisors never share a home
    third = serve(second.paths, tmp_path / "third.log")
    assert third.process.wait(timeout=60) == 2
    assert "another `heat-platform serve`" in third.log.read_text()


def test_hostile_clients_cost_bounded_memory_and_others_keep_being_answered(served, deployed,
                                                                            tmp_path):
    # every setting from a .env file, as a user would write it next to the platform
    (tmp_path / ".env").write_text("HEAT_SERVING_API_KEY=fault-key\nHEAT_SERVING_BODY_TIMEOUT=2"
                                   "\nHEAT_SERVING_MAX_BODY_BYTES=1048576\n")
    running = served(cwd=tmp_path)
    live = running.wait_live()
    key = {"X-API-Key": "fault-key"}
    port = running.port
    head = (b"POST /predict HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n")
    chunk = b"10000\r\n" + b"1" * 0x10000 + b"\r\n"

    # the key guards the proxy, checked before any body is read
    assert httpx.get(f"{running.url}/predict-temperature?x=0.5&y=0.5&t=0.1").status_code == 401
    status, sent, _seconds = raw_request(port, head + b"\r\n", iter(lambda: chunk, None))
    assert " 401 " in status and sent < SENT_AT_MOST, (status, sent)

    with Traffic(running.url, headers=key) as traffic:
        wait_until(lambda: traffic.count() >= 20, timeout_s=30, what="traffic")
        memory = {"proxy": rss(live["proxy_tag"]), "backend": rss(live["backend_tag"])}
        endless = raw_request(port, head + b"x-api-key: fault-key\r\n\r\n",
                              iter(lambda: chunk, None))
        huge = raw_request(port, b"POST /predict HTTP/1.1\r\nHost: t\r\nx-api-key: fault-key\r\n"
                                 b"content-type: application/json\r\n"
                                 b"content-length: 2000000000\r\n\r\n",
                           iter(lambda: chunk, None))
        slow_body = raw_request(port, b"POST /predict HTTP/1.1\r\nHost: t\r\n"
                                      b"x-api-key: fault-key\r\ncontent-length: 100\r\n\r\n",
                                [b"{"] * 50, pause_s=0.5)
        slow_headers = raw_request(port, b"", [b"GET /livez HTTP/1.1\r\n"] +
                                   [b"x-a: b\r\n"] * 50, pause_s=0.5)
        grown = {"proxy": rss(live["proxy_tag"]) - memory["proxy"],
                 "backend": rss(live["backend_tag"]) - memory["backend"]}
        asked = traffic.count()
        wait_until(lambda: traffic.count() >= asked + 20, timeout_s=30, what="traffic")
    assert " 413 " in endless[0] and endless[1] < SENT_AT_MOST, endless  # cut at the 1 MiB limit
    assert " 413 " in huge[0] and huge[1] < SENT_AT_MOST, huge
    assert " 408 " in slow_body[0] and slow_body[2] < 10, slow_body
    assert " 408 " in slow_headers[0] and slow_headers[2] < 10, slow_headers
    assert traffic.failures() == []
    assert grown["proxy"] < 32 * MiB and grown["backend"] < 64 * MiB, grown
    report("hostile clients through heat-platform serve", requests=len(traffic.outcomes),
           failed=0, endless_body_bytes_sent=endless[1], memory_growth_mib={
               name: round(value / MiB, 1) for name, value in grown.items()})


def test_the_service_alone_bounds_hostile_requests_too(deployed):
    """What a bare `bentoml serve` (a Kubernetes pod) does on its own: the same limits."""
    with deployed.start(HEAT_SERVING_BODY_TIMEOUT="2", HEAT_SERVING_MAX_BODY_BYTES="1048576",
                        HEAT_SERVING_API_KEY="pod-key") as server, \
            Traffic(server.url, headers=server.headers) as traffic:
        head = (b"POST /predict HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n")
        chunk = b"10000\r\n" + b"1" * 0x10000 + b"\r\n"
        wait_until(lambda: traffic.count() >= 20, timeout_s=30, what="traffic")
        before = rss(server.tag)
        unauthorised = raw_request(server.port, head + b"\r\n", iter(lambda: chunk, None))
        endless = raw_request(server.port, head + b"x-api-key: pod-key\r\n\r\n",
                              iter(lambda: chunk, None))
        huge = raw_request(server.port, b"POST /predict HTTP/1.1\r\nHost: t\r\n"
                                        b"x-api-key: pod-key\r\ncontent-length: 2000000000\r\n\r\n",
                           iter(lambda: chunk, None))
        slow_body = raw_request(server.port, b"POST /predict HTTP/1.1\r\nHost: t\r\n"
                                             b"x-api-key: pod-key\r\ncontent-length: 100\r\n\r\n",
                                [b"{"] * 50, pause_s=0.5)
        grown = rss(server.tag) - before
        asked = traffic.count()
        wait_until(lambda: traffic.count() >= asked + 20, timeout_s=30, what="traffic")
    assert " 401 " in unauthorised[0] and unauthorised[1] < SENT_AT_MOST, unauthorised
    assert " 413 " in endless[0] and endless[1] < SENT_AT_MOST, endless
    assert " 413 " in huge[0] and huge[1] < SENT_AT_MOST, huge
    assert " 408 " in slow_body[0] and slow_body[2] < 10, slow_body
    assert traffic.failures() == [] and grown < 64 * MiB, grown
