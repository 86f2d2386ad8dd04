"""`heat-platform serve` refuses what it must refuse before it starts anything, and its proxy's
configuration is one HAProxy accepts."""

from __future__ import annotations

import shutil

import pytest

from heat_platform.cli import main
from heat_platform.serving.proxy import ProxyConfig, ProxyMissing, find_binary, write_config


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_serve_refuses_a_public_address_without_a_key(host, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("HEAT_SERVING_API_KEY", raising=False)
    assert main(["--home", str(tmp_path / "home"), "serve", "--host", host]) == 2
    error = capsys.readouterr().err
    assert "without an API key" in error and "--insecure" in error
    assert not (tmp_path / "home" / "serving").exists()  # nothing was started or written


def test_serve_says_how_to_install_the_proxy_when_it_is_missing(tmp_path):
    with pytest.raises(ProxyMissing, match="apt-get install haproxy"):
        find_binary(search_path=str(tmp_path))


def config(**options) -> ProxyConfig:
    return ProxyConfig(**{"host": "127.0.0.1", "port": 3100, "api_key": None,
                          "max_body_bytes": 8 << 20, "body_timeout_s": 10.0, **options})


@pytest.mark.skipif(shutil.which("haproxy") is None and not shutil.which(
    "haproxy", path="/usr/sbin"), reason="HAProxy is not installed: .ci/run installs it "
                                        "(apt-get install haproxy)")
@pytest.mark.parametrize("options", [{}, {"api_key": 'k"e y\\', "access_log": True,
                                          "threads": 2, "host": "0.0.0.0"}])
def test_haproxy_accepts_the_configuration(options, tmp_path):
    path = write_config(tmp_path, config(**options), tmp_path / "admin.sock")  # raises if not
    text = path.read_text()
    assert "wait-for-body" in text and f"gt {8 << 20}" in text
    assert ("sha2(256)" in text) == bool(options.get("api_key"))
    if options.get("api_key"):
        assert options["api_key"] not in text  # only its sha256 is written
