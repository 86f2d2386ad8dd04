"""The lineage of a served prediction: from the request id of an answer of the real `bentoml
serve` (found in the serving log), and from the bento's tag, back to the raw files.

Here rather than in audit/ because it needs the deployed bento this package's fixtures build
once per session (the lineage library itself is tested in audit/test_lineage.py).
"""

from __future__ import annotations

import json

import httpx
import pytest

from heat_platform.audit.lineage import find_request
from heat_platform.cli import main
from heat_platform.data.catalog import Catalog
from heat_platform.polling import wait_until
from heat_platform_tests.assets.conftest import EXPERIMENT

pytestmark = pytest.mark.server


@pytest.fixture
def home(deployed, monkeypatch) -> str:
    """The deployed platform as the CLI's home (its MLflow store too)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       f"sqlite:///{deployed.paths.mlflow_dir / 'mlflow.db'}")
    monkeypatch.delenv("HEAT_PLATFORM_DB_URL", raising=False)
    return str(deployed.paths.home)


def lineage(home: str, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["--home", home, "lineage", *args, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_a_served_prediction_leads_to_its_raw_files_with_full_hashes(deployed, server, home,
                                                                      capsys):
    answer = httpx.post(f"{server.url}/predict", json={"points": [[1.0, 0.5, 0.25]]},
                        timeout=30).json()
    request_id = answer["request_id"]
    log = deployed.paths.serving / "log"  # every request is sampled (see the server fixture)
    wait_until(lambda: find_request(log, request_id), timeout_s=30,
               what=f"request {request_id} in the serving log")

    status, chain = lineage(home, capsys, request_id, "--verify")
    assert status == 0 and chain["verification"] == [], chain["verification"]
    assert chain["reference"]["kind"] == "request_id"
    assert chain["reference"]["request"]["endpoint"] == "/predict"
    (model,) = chain["models"]
    assert model["model"]["version"] == answer["model_version"] == deployed.champion.version
    assert model["model"]["kind"] == answer["model_kind"]
    assert "champion" in model["model"]["aliases"]
    assert model["mlflow_run"]["run_id"] == answer["mlflow_run_id"]
    assert model["training_set"]["data_version"] == answer["data_version"]
    assert model["gate"]["decision"]["decision"] == "promote"
    assert {e["action"] for e in model["audit"]} >= {"promote", "deploy"}
    catalog = Catalog(deployed.paths.catalog_url)
    for raw in model["raw_files"]:
        stored = catalog.batch_version(EXPERIMENT, raw["batch"], raw["sha256"])
        assert len(raw["sha256"]) == 64 and raw["sha256"] == stored.sha256
        assert raw["source_path"] == stored.source_path and raw["blob_path"] == stored.blob_path
        assert raw["ingested_at"] == stored.ingested_at.isoformat()
        assert raw["n_quarantined"] is not None and raw["status"] == "validated"
    assert {r["batch"] for r in model["raw_files"]} == {"b001"}

    # the same chain from the served model_version, and from the bento serving it
    status, by_version = lineage(home, capsys, answer["model_version"], "--experiment",
                                 EXPERIMENT)
    assert status == 0 and by_version["models"][0]["raw_files"] == model["raw_files"]
    status, by_bento = lineage(home, capsys, deployed.bento, "--verify")
    assert status == 0 and by_bento["verification"] == []
    assert by_bento["bento"]["tag"] == deployed.bento
    (served,) = by_bento["models"]
    assert served["bento_model"]["metadata"]["mlflow_run_id"] == answer["mlflow_run_id"]
    assert served["bento_model"]["file"] in by_bento["checked"]  # the bento's copy re-hashed
