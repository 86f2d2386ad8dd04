"""A bounded stream of requests to a server, from threads of keep-alive clients, recording every
outcome with its time: what the blue/green and fault tests count."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the answer (or the failure) came
    status: int  # 0: no answer (a transport error)
    bento: str  # x-heat-bento, or the error


class Traffic:
    """``clients`` threads, each one keep-alive client asking GET /predict-temperature, at most
    ``rate`` requests/s each (None: back to back), until stopped, ``max_requests`` in all or
    ``max_seconds``."""

    def __init__(self, url: str, clients: int = 1, rate: float | None = None,
                 headers: dict[str, str] | None = None, max_requests: int = 20_000,
                 max_seconds: float = 240) -> None:
        self.url, self.rate, self.headers = url, rate, headers or {}
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.stop_event = threading.Event()
        self.outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.outcomes

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, status: int = 200) -> int:
        return sum(outcome.status == status for outcome in list(self.outcomes))

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in list(self.outcomes) if outcome.status != 200]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30.0, headers=self.headers) as client:
            while not self.stop_event.is_set() and len(self.outcomes) < self.max_requests \
                    and time.monotonic() < deadline:
                if interval:
                    next_at += interval
                    self.stop_event.wait(max(0.0, next_at - time.monotonic()))
                try:
                    response = client.get("/predict-temperature",
                                          params={"x": 0.5, "y": 0.5, "t": 0.1})
                    self.outcomes.append(Outcome(time.monotonic(), response.status_code,
                                                 response.headers.get("x-heat-bento", "")))
                except httpx.HTTPError as error:
                    self.outcomes.append(Outcome(time.monotonic(), 0, repr(error)))
