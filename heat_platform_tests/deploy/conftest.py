"""Fixtures of the deployment tests: a real PostgreSQL server for the session."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from heat_platform_tests.deploy.postgres import PostgresServer, missing_reason, postgres_bin


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback for the whole session, stopped at its end."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(missing_reason())
    server = PostgresServer.start(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Callable[[str], str]:
    """Makes a fresh database per call (``purpose`` names it); returns its SQLAlchemy URL."""

    def create(purpose: str) -> str:
        return postgres_server.create_database(f"{purpose}_{uuid.uuid4().hex[:10]}")

    return create
