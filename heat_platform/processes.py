"""Child processes the platform starts (`bentoml serve`, `dagster-daemon`, the serving proxy):
stop them whole, find what is left of them.

A process group is not always whole: BentoML's arbiter (circus) starts each of its workers in a
session of its own, so a signal to the arbiter's group reaches the arbiter only, and workers
whose arbiter was killed live on, reparented to init. What finds them is an environment
variable: a child started with ``PROCESS_TAG=<tag>`` passes it to every process it starts, and
:func:`tagged_processes` finds them all by it, wherever they moved, even from another process
after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

PROCESS_TAG = "HEAT_PLATFORM_PROCESS_TAG"


def stop_process_group(process: subprocess.Popen, grace_s: float, kill_wait_s: float = 5.0,
                       stop_signal: int = signal.SIGTERM) -> None:
    """Send ``stop_signal`` to the group of ``process`` (started with
    ``start_new_session=True``), so every worker it forked stops too; SIGKILL the group if
    anything of it is left after ``grace_s``. Workers that outlived their leader (a leader that
    crashed or was killed alone) are stopped as well: the group, not the leader, is waited for."""
    group = process.pid
    if process.poll() is not None and not group_members(group):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, stop_signal)
    if _wait_for_group(process, grace_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    if not _wait_for_group(process, kill_wait_s):
        raise TimeoutError(f"process group {group} still has {group_members(group)} after SIGKILL")


def new_process_tag() -> str:
    """A fresh tag for the processes of one child (see :func:`tagged_processes`)."""
    return uuid.uuid4().hex


def tagged_processes(tag: str) -> list[int]:
    """Pids of the live (not zombie) processes started with ``PROCESS_TAG=<tag>`` in their
    environment: a child and every process it started, in whatever session or parent."""
    needle = f"{PROCESS_TAG}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.append(int(entry.name))
    return found


def stop_processes(pids: list[int], grace_s: float, kill_wait_s: float = 5.0) -> list[int]:
    """SIGTERM ``pids`` (not children of ours: orphans), SIGKILL those left after ``grace_s``;
    returns those that were still there to stop."""
    alive = [pid for pid in pids if _exists(pid)]
    for signal_number, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
        deadline = time.monotonic() + wait_s
        while any(_exists(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_exists(pid) for pid in alive):
            break
    return alive


def _exists(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie is not)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(group: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``group``."""
    import psutil

    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == group:
                members.append(process.pid)
    return members


def _wait_for_group(process: subprocess.Popen, timeout_s: float) -> bool:
    """Reap the leader and wait until no process of its group is left; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)
        if process.poll() is not None and not group_members(process.pid):
            return True
        if time.monotonic() > deadline:
            return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a child's log file ("" when there is none yet)."""
    try:
        with open(path, "rb") as handle:
            # the end of the file only: a log may be large
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 64 * 1024))
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
    except OSError:
        return ""


def raise_if_exited(process: subprocess.Popen | None, name: str, log_path: Path,
                    lines: int = 30) -> None:
    """Raise RuntimeError, with the tail of its log, when a started child has exited."""
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"{name} exited with {process.returncode}:\n"
                           f"{log_tail(log_path, lines)}")
