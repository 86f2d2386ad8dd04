"""Waiting for a condition, written once: poll, check that what we wait on is still alive, give
up with a message that says what we waited for.

A foundation module (it imports nothing of the platform), so every layer may use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], *, timeout_s: float, what: str,
               interval_s: float = 1.0, alive: Callable[[], None] | None = None,
               context: Callable[[], str] | None = None) -> T:
    """Poll ``probe`` until it returns something truthy and return that. ``alive()`` is called
    between polls and raises when what we wait on has died (a server, the daemon); after
    ``timeout_s`` a TimeoutError names ``what``, followed by ``context()`` (a log tail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            tail = f"\n{context()}" if context is not None else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}{tail}")
        time.sleep(interval_s)
