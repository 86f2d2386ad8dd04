"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, a temporary data
directory, a free loopback port, started by a test session and stopped after it.

initdb refuses to run as root, so as root the server runs as the `postgres` user the Debian
package creates (else `nobody`), in a directory under /tmp that user can reach.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from heat_platform.processes import log_tail
from heat_platform.serving.server import free_port

USER = "heat"
# What `make system-deps` (.ci/run) installs when PostgreSQL is missing.
PACKAGE = "postgresql"


def postgres_bin() -> Path | None:
    """The directory of pg_ctl and initdb: on PATH, else Debian's /usr/lib/postgresql/<major>/bin
    (the package does not put them on PATH), the newest major first."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda path: int(path.parent.parent.name) if
                        path.parent.parent.name.isdigit() else 0, reverse=True)
    return candidates[0].parent if candidates else None


def _server_user() -> str | None:
    """Who runs the server: ourselves, or as root a system user (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    password: str
    user: str | None  # the system user the server runs as (None: this process's user)

    @classmethod
    def start(cls, bin_dir: Path, timeout_s: int = 60) -> PostgresServer:
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="heat-pg-"))
        data_dir, password = root / "data", secrets.token_urlsafe(16)
        (root / "password").write_text(password)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chown(root / "password", entry.pw_uid, entry.pw_gid)
        server = cls(bin_dir, data_dir, free_port(), password, user)
        try:
            server._run("initdb", "-D", str(data_dir), "-U", USER, "--auth=scram-sha-256",
                        f"--pwfile={root / 'password'}", "--encoding=UTF8", "--no-locale")
            with (data_dir / "postgresql.conf").open("a") as conf:
                # Loopback TCP only, no socket file; durability is not what a test measures.
                conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {server.port}\n"
                           "unix_socket_directories = ''\nfsync = off\n"
                           "synchronous_commit = off\nfull_page_writes = off\n"
                           "max_connections = 200\n")
            server._run("pg_ctl", "-D", str(data_dir), "-l", str(root / "server.log"), "-w",
                        "-t", str(timeout_s), "start")
        except Exception:
            server.stop()
            raise
        return server

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([str(self.bin_dir / program), *args], user=self.user,
                              capture_output=True, text=True, timeout=120,
                              cwd=self.data_dir.parent)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}\n"
                               f"{log_tail(self.data_dir.parent / 'server.log')}")

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        """The SQLAlchemy URL of ``database`` (``driver="postgresql"`` for libpq's form)."""
        return f"{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import psycopg2

        connection = psycopg2.connect(self.url(driver="postgresql"))
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def missing_reason() -> str:
    return (f"PostgreSQL is not installed: no pg_ctl on PATH or in /usr/lib/postgresql (Debian "
            f"package '{PACKAGE}'; `make system-deps` as root installs it, .ci/run does; running "
            f"as {getpass.getuser()})")
