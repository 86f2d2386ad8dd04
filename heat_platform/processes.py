"""Child process groups the platform starts (`bentoml serve`, `dagster-daemon`): stop them whole."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def stop_process_group(process: subprocess.Popen, grace_s: float, kill_wait_s: float = 5.0) -> None:
    """SIGTERM the group of ``process`` (started with ``start_new_session=True``), so every worker
    it forked stops too; SIGKILL the group if it has not exited after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=kill_wait_s)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a child's log file ("" when there is none yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
