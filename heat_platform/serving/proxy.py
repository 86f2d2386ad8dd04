"""The front of `heat-platform serve`: HAProxy (the Debian package), configured by the platform
and steered through its admin socket.

HAProxy holds the stable port and the client connections; the `bentoml serve` backends sit
behind it in two server slots, ``blue`` and ``green``. A blue/green switch is three commands on
the admin socket (point the idle slot at the new backend, make it ready, drain the other): no
reload, so no client connection is closed by a switch. (An nginx reload closes its old workers'
idle keep-alive connections, and a client that sends on one at that instant gets no answer: 21
failed requests of 17,489 over 40 reloads with 4 keep-alive clients, measured here.)

What the proxy enforces before a backend sees anything, from the serving settings:

* the API key (``HEAT_SERVING_API_KEY``; the config holds its sha256, not the key), checked on
  the headers, before any body is read; /livez, /readyz, /healthz, /metrics stay open;
* a declared body over ``HEAT_SERVING_MAX_BODY_BYTES`` is a 413 at once; bodies are buffered
  (up to HAProxy's 16 kB buffer) before a backend is chosen, within
  ``HEAT_SERVING_BODY_TIMEOUT`` seconds, like the headers (408 after), so a slow client costs a
  backend nothing; longer bodies stream through and the service counts them (413) and times
  them (408) itself (bentos/heat_service/limits.py);
* connections (``HEAT_SERVING_PROXY_MAX_CONNECTIONS``), inactivity and backend timeouts;
* no per-request log unless ``HEAT_SERVING_PROXY_ACCESS_LOG=1``.

Every answer the proxy writes itself is JSON in the service's error shape
(``{"error": ..., "detail": ...}``); every answer of a backend carries ``x-heat-bento``, the
bento that answered.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from heat_platform.polling import wait_until
from heat_platform.processes import (
    PROCESS_TAG,
    log_tail,
    new_process_tag,
    raise_if_exited,
    stop_process_group,
    stop_processes,
    tagged_processes,
)
from heat_platform.settings import system_environment

BINARY = "haproxy"
SLOTS = ("blue", "green")
BACKEND = "heat"
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
# What HAProxy's admin socket answers when it refuses a command.
REFUSALS = ("unknown", "no such", "require", "invalid", "missing", "denied", "can't", "cannot",
            "failed", "not found", "expects")
# Longest path a Unix socket may have (sun_path is 108 bytes on Linux, with its NUL).
MAX_SOCKET_PATH = 100


class ProxyMissing(RuntimeError):
    """HAProxy is not installed; the message says how to install it."""


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy's configuration is made of (from the serving settings)."""

    host: str
    port: int
    api_key: str | None
    max_body_bytes: int
    body_timeout_s: float
    threads: int = 1
    max_connections: int = 4096
    access_log: bool = False
    client_timeout_s: float = 30.0
    server_timeout_s: float = 60.0


def find_binary(search_path: str | None = None) -> str:
    """The haproxy executable (on ``search_path``, default $PATH and the sbin folders Debian
    puts it in), or ProxyMissing saying how to get it."""
    path = (shutil.which(BINARY, path=search_path) if search_path is not None else
            shutil.which(BINARY) or shutil.which(BINARY, path="/usr/sbin:/usr/local/sbin"))
    if path is None:
        raise ProxyMissing("`heat-platform serve` needs HAProxy, which is not installed: "
                           "`apt-get install haproxy` (Debian/Ubuntu; HAProxy >= 2.4)")
    return path


def error_body(error: str, detail: str) -> str:
    return json.dumps({"error": error, "detail": detail})


# The answers the proxy writes itself, as full HTTP responses (HAProxy's errorfile format).
ERRORS = {
    400: ("Bad Request", "bad request", "the request is not valid HTTP"),
    408: ("Request Timeout", "request timeout",
          "the request's headers and body did not arrive in time"),
    413: ("Payload Too Large", "request body too large", "see HEAT_SERVING_MAX_BODY_BYTES"),
    500: ("Internal Server Error", "proxy error", "the proxy failed to handle the request"),
    502: ("Bad Gateway", "backend unavailable", "the model server gave no valid answer"),
    503: ("Service Unavailable", "no model server available",
          "none is live yet or the live one is restarting; retry shortly"),
    504: ("Gateway Timeout", "backend timeout", "the model server did not answer in time"),
}


def errorfile(status: int) -> str:
    reason, error, detail = ERRORS[status]
    body = error_body(error, detail)
    retry = "retry-after: 1\r\n" if status == 503 else ""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-cache\r\n{retry}"
            f"connection: close\r\n\r\n{body}")


def render_config(config: ProxyConfig, directory: Path, admin_socket: Path) -> str:
    """haproxy.cfg for ``config``; error files and the bento map live in ``directory``."""
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    seconds = {"body": f"{int(config.body_timeout_s * 1000)}ms",
               "client": f"{int(config.client_timeout_s * 1000)}ms",
               "server": f"{int(config.server_timeout_s * 1000)}ms"}
    global_log = "    log stderr format raw local0 info\n" if config.access_log else ""
    request_log = "    log global\n    option httplog\n" if config.access_log else ""
    key_rules = ""
    if config.api_key:
        digest = hashlib.sha256(config.api_key.encode()).hexdigest().upper()
        unauthorised = error_body("missing or invalid API key",
                                  "send the key as 'X-API-Key' or 'Authorization: Bearer'")
        key_rules = (
            "    # the key's sha256 is compared, so the key itself is not in this file\n"
            "    http-request set-var(txn.key) req.hdr(x-api-key)\n"
            "    http-request set-var(txn.key) 'req.hdr(authorization),regsub(^[^ ]+ +,)' "
            "if !{ var(txn.key) -m found } { req.hdr(authorization) -m reg -i '^bearer +' }\n"
            f"    http-request return status 401 content-type application/json "
            f"hdr www-authenticate Bearer string {quoted(unauthorised)} "
            f"if !open_path !{{ var(txn.key),sha2(256),hex -m str {digest} }}\n")
    too_large = error_body("request body too large",
                           f"at most {config.max_body_bytes} bytes a request")
    errorfiles = "".join(f"    errorfile {status} {directory / 'errors' / f'{status}.http'}\n"
                         for status in ERRORS)
    open_paths = " ".join(OPEN_PATHS)
    return f"""# Written by `heat-platform serve` at each start (heat_platform/serving/proxy.py).
global
    master-worker
    nbthread {config.threads}
    maxconn {config.max_connections}
    pidfile {directory / 'haproxy.pid'}
    stats socket {admin_socket} mode 600 level admin
{global_log}
defaults
    mode http
{request_log}\
    timeout connect 2s
    timeout client {seconds['client']}
    timeout http-request {seconds['body']}
    timeout http-keep-alive 30s
    timeout server {seconds['server']}
    timeout queue 5s
    # Every endpoint is a pure function of its request: a request is sent again when the
    # connection to the backend failed or closed before any answer (a keep-alive race).
    retries 2
    retry-on conn-failure empty-response junk-response
    option redispatch 1
    errorfiles heat-json

http-errors heat-json
{errorfiles}
frontend heat
    bind {config.host}:{config.port}
    acl open_path path {open_paths}
{key_rules}\
    http-request return status 413 content-type application/json string {quoted(too_large)} \
if {{ req.hdr_val(content-length) gt {config.max_body_bytes} }}
    # a body is buffered (up to the request buffer) before a backend is chosen: slow clients
    # wait here, not in a backend's worker
    http-request wait-for-body time {seconds['body']} if {{ req.hdr_val(content-length) gt 0 }} \
|| {{ req.hdr(transfer-encoding) -m found }}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    http-reuse always
    http-response set-header x-heat-bento %[srv_name,map({directory / 'bentos.map'},none)]
    server {SLOTS[0]} 127.0.0.1:1 disabled
    server {SLOTS[1]} 127.0.0.1:1 disabled
"""


def write_config(directory: Path, config: ProxyConfig, admin_socket: Path) -> Path:
    """Write haproxy.cfg, its error files and an empty bento map into ``directory`` and have
    HAProxy check them; returns the configuration's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "errors").mkdir(exist_ok=True)
    for status in ERRORS:
        (directory / "errors" / f"{status}.http").write_text(errorfile(status))
    (directory / "bentos.map").write_text("")
    path = directory / "haproxy.cfg"
    path.write_text(render_config(config, directory, admin_socket))
    path.chmod(0o600)  # no key in it, but the admin socket's path and the limits
    check = subprocess.run([find_binary(), "-c", "-q", "-f", str(path)], capture_output=True,
                           text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration {path}:\n"
                           f"{check.stdout}{check.stderr}")
    return path


def admin_socket_path(directory: Path) -> Path:
    """The admin socket in ``directory`` when its path fits a Unix socket, else in a private
    temporary directory."""
    path = directory / "admin.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="heat-proxy-")) / "admin.sock"


@dataclass
class Proxy:
    """A running HAProxy in its own process group; ``command`` talks to its admin socket."""

    process: subprocess.Popen
    directory: Path
    admin_socket: Path
    log_path: Path
    config: ProxyConfig
    tag: str  # heat_platform.processes.PROCESS_TAG of its processes
    routed: set[str] = field(default_factory=set)  # slots that take or drain requests

    @classmethod
    def start(cls, directory: Path, config: ProxyConfig, timeout_s: float = 30.0) -> Proxy:
        """Write the configuration into ``directory`` and start HAProxy in the foreground;
        returns once it accepts connections on the stable port."""
        binary = find_binary()
        admin = admin_socket_path(directory)
        admin.unlink(missing_ok=True)
        config_path = write_config(directory, config, admin)
        log_path = directory / "haproxy.log"
        tag = new_process_tag()
        with log_path.open("ab") as log:
            process = subprocess.Popen([binary, "-W", "-db", "-f", str(config_path)],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=system_environment(**{PROCESS_TAG: tag}))
        proxy = cls(process, directory, admin, log_path, config, tag)
        try:
            wait_until(proxy.ready, timeout_s=timeout_s, interval_s=0.05,
                       what=f"haproxy on {config.host}:{config.port}",
                       alive=proxy.check_alive, context=proxy.log_tail)
        except BaseException:
            proxy.stop(grace_s=2.0)
            raise
        return proxy

    def ready(self) -> bool:
        """Does the admin socket answer and the stable port accept connections?"""
        try:
            self.command("show info")
            with socket.create_connection((_connect_host(self.config.host), self.config.port),
                                          timeout=1.0):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        raise_if_exited(self.process, "haproxy", self.log_path)

    def command(self, text: str, timeout_s: float = 5.0) -> str:
        """One line of admin commands (``;``-separated); their output, errors raised."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout_s)
            connection.connect(str(self.admin_socket))
            connection.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace")
        if not text.startswith("show") and any(
                phrase in answer.lower() for phrase in REFUSALS):
            raise RuntimeError(f"haproxy refused {text!r}: {answer.strip()}")
        return answer

    def route(self, slot: str, port: int, bento: str) -> None:
        """Send new requests to the backend on ``port`` through ``slot``; the other slot drains
        (its requests in flight finish). One admin line, so both happen together."""
        other = SLOTS[1 - SLOTS.index(slot)]
        self.command(f"set map {self.directory / 'bentos.map'} {slot} {bento}"
                     if self._mapped(slot) else
                     f"add map {self.directory / 'bentos.map'} {slot} {bento}")
        drain = f"; set server {BACKEND}/{other} state drain" if other in self.routed else ""
        self.command(f"set server {BACKEND}/{slot} addr 127.0.0.1 port {port}; "
                     f"set server {BACKEND}/{slot} state ready{drain}")
        self.routed.add(slot)

    def disable(self, slot: str) -> None:
        """No request goes to ``slot`` any more (those in flight finish)."""
        self.command(f"set server {BACKEND}/{slot} state maint")
        self.routed.discard(slot)

    def sessions(self, slot: str) -> int:
        """Requests in flight to ``slot``."""
        return int(self._stat(slot).get("scur") or 0)

    def _stat(self, slot: str) -> dict[str, str]:
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == BACKEND and row.get("svname") == slot:
                return row
        raise RuntimeError(f"haproxy has no server {BACKEND}/{slot}")

    def _mapped(self, slot: str) -> bool:
        return any(line.split()[1:2] == [slot] for line in
                   self.command(f"show map {self.directory / 'bentos.map'}").splitlines()
                   if line.strip())

    def stop(self, grace_s: float = 30.0) -> None:
        """Soft stop (SIGUSR1: stop listening, let the requests in flight finish), the whole
        group SIGKILLed after ``grace_s``."""
        import signal

        stop_process_group(self.process, grace_s=grace_s, stop_signal=signal.SIGUSR1)
        stop_processes(tagged_processes(self.tag), grace_s=1.0)
        if self.admin_socket.parent != self.directory:
            shutil.rmtree(self.admin_socket.parent, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def _connect_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host`` (a wildcard: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
