"""Child process groups the platform starts (`bentoml serve`, `dagster-daemon`, the serving
proxy): stop them whole, find what is left of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


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


def kill_process_group(group: int, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process of a group that is not our child (an orphan of a crashed run);
    returns the pids that were killed once none of them is left."""
    members = group_members(group)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def group_members(group: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``group``."""
    import psutil

    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == group:
                members.append(process.pid)
    return members


def command_line(pid: int) -> str:
    """A process's command line ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


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
