"""Whatever stops `heat-platform demo` stops the dagster-daemon it started, and its runs.

The demo runs as a user runs it: its own process (group), started the way a shell starts a
foreground command, interrupted the way a terminal (Ctrl-C: SIGINT to the foreground group),
`kill` or `timeout` (SIGTERM) or its own stage timeout does. The daemon lives in its own session,
so nothing reaches it but what the demo does on its way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from heat_platform.paths import PlatformPaths
from heat_platform.polling import wait_until
from heat_platform.settings import child_environment
from heat_platform_tests.faults.test_daemon_restart import group_members

STARTED = re.compile(r"dagster-daemon started \(pid (\d+),")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> PlatformPaths:
    """One platform home for the three stops (each demo continues the previous one's story)."""
    return PlatformPaths(tmp_path_factory.mktemp("demo-stopped") / "platform")


def start_demo(paths: PlatformPaths, *args: str) -> tuple[subprocess.Popen, list[str]]:
    command = [str(Path(sys.executable).with_name("heat-platform")), "--home", str(paths.home),
               "demo", *args]
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, like a shell's foreground job
        preexec_fn=_foreground_signals,
        env=child_environment(HEAT_PLATFORM_HOME=str(paths.home),
                              DAGSTER_HOME=str(paths.dagster_home),
                              MLFLOW_TRACKING_URI=f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}"))
    return demo, []


def _foreground_signals() -> None:
    """A shell starts a foreground job with SIGINT and SIGTERM at their defaults, whatever its own
    dispositions; this pytest process may have inherited or been given an ignored SIGINT, which
    a child would inherit (and Python then installs no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def read_until(demo: subprocess.Popen, output: list[str], pattern: re.Pattern) -> re.Match:
    for line in demo.stdout:
        output.append(line)
        if match := pattern.search(line):
            return match
    pytest.fail("the demo ended before saying: " + pattern.pattern + "\n" + "".join(output))


def run_in_progress(paths: PlatformPaths) -> bool:
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        return bool(instance.get_runs(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED])))


def assert_stopped_with_its_daemon(demo, output, daemon_pid: int, expected_code: int) -> None:
    try:
        output.append(demo.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        pytest.fail("the demo did not stop:\n" + "".join(output))
    assert demo.returncode == expected_code, "".join(output)
    wait_until(lambda: not group_members(daemon_pid), timeout_s=10, interval_s=0.1,
               what=f"the daemon's process group {daemon_pid} to end")


@contextlib.contextmanager
def killed_on_failure(demo: subprocess.Popen, daemon_pid: int):
    """A failing test still stops what it started: the demo's group and the daemon's session
    (which nothing else would reach)."""
    try:
        yield
    except BaseException:
        for group in (demo.pid, daemon_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        raise


@pytest.mark.slow
@pytest.mark.parametrize(("how", "expected_code"), [
    ("ctrl-c", -signal.SIGINT),  # a KeyboardInterrupt that ends the program
    ("sigterm", 128 + signal.SIGTERM),  # `kill`, `timeout`, a service manager
])
def test_a_signal_stops_the_demo_and_its_daemon_with_its_runs(home, how, expected_code):
    demo, output = start_demo(home)
    daemon_pid = int(read_until(demo, output, STARTED).group(1))
    with killed_on_failure(demo, daemon_pid):
        # the moment that matters: a run of the daemon is in progress
        wait_until(lambda: run_in_progress(home), timeout_s=600, interval_s=0.5,
                   what="a run to start")
        if how == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)  # what a terminal sends its foreground group
        else:
            os.kill(demo.pid, signal.SIGTERM)
        assert_stopped_with_its_daemon(demo, output, daemon_pid, expected_code)


@pytest.mark.slow
def test_a_stage_timeout_stops_the_demo_and_its_daemon(home):
    demo, output = start_demo(home, "--timeout", "5")
    daemon_pid = int(read_until(demo, output, STARTED).group(1))
    with killed_on_failure(demo, daemon_pid):
        assert_stopped_with_its_daemon(demo, output, daemon_pid, 1)
    assert "TimeoutError: timed out after 5 s waiting for" in "".join(output)
