"""Settings in one place: every variable typed and documented once, the README generated from
it, secrets kept out of the Dagster UI, and no other module reading the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heat_platform.settings import PlatformSettings, ServingSettings, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_configuration_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    begin = readme.index("<!-- settings table:")
    table = readme[readme.index("\n", begin) + 1:readme.index("<!-- end of settings table -->")]
    assert table.strip() == markdown_table().strip(), \
        "README out of date: paste `heat-platform settings --markdown` between the markers"


def test_no_module_but_settings_reads_the_environment():
    # (a text search, not ast.parse: CPython 3.11's AST constructor is not thread-safe, and
    # other threads of the test process use it)
    readers = []
    for path in sorted((ROOT / "heat_platform").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "heat_platform":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\bos\.(environ|getenv)\b|\bfrom os import\b", line.split("#")[0]):
                readers.append(f"{path.relative_to(ROOT)}:{number}")
    assert readers == [], f"read settings through heat_platform.settings: {readers}"


def test_settings_come_from_the_environment_then_the_dotenv_file(tmp_path, monkeypatch):
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("HEAT_PLATFORM_SENSOR_INTERVAL=7\nHEAT_PLATFORM_REQUIRE_APPROVAL=1\n"
                      "HEAT_SERVING_API_KEY=from-the-file\nHEAT_SERVING_ACCESS_LOG=off\n")
    monkeypatch.setenv("HEAT_PLATFORM_ENV_FILE", str(dotenv))
    monkeypatch.setenv("HEAT_PLATFORM_SENSOR_INTERVAL", "3")  # the environment wins
    platform = PlatformSettings.load()
    assert platform.sensor_interval == 3 and platform.require_approval is True
    serving = ServingSettings.load()
    assert serving.api_key.get_secret_value() == "from-the-file"
    assert "from-the-file" not in repr(serving)  # secrets do not print
    # what `heat-platform serve` hands the bento it starts
    assert serving.environment() == {"HEAT_SERVING_API_KEY": "from-the-file",
                                     "HEAT_SERVING_ACCESS_LOG": "0"}


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("HEAT_PLATFORM_SENSOR_INTERVAL", "often")
    with pytest.raises(ValueError, match="sensor_interval"):
        PlatformSettings.load()


def test_secrets_reach_resources_as_env_vars_not_values(platform_paths, monkeypatch):
    import dagster as dg

    from heat_platform.resources import build_resources, resolved

    url = "http://127.0.0.1:9/alerts?token=s3cret"
    monkeypatch.setenv("HEAT_PLATFORM_ALERT_WEBHOOK", url)
    resources = build_resources(platform_paths)
    # what the Dagster UI shows of the resource's config: the variable's name, not the token
    assert isinstance(resources["alerts"].url, dg.EnvVar)
    assert resources["alerts"].url.env_var_name == "HEAT_PLATFORM_ALERT_WEBHOOK"
    assert resolved(resources)["alerts"].url == url  # what a run sees
