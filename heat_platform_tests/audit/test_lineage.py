"""`heat-platform lineage` on a real pipeline: a registered model version back to its raw files,
and `--verify` naming each stored file that is no longer what was recorded.

The model is the classical inversion on a crude grid (seconds), registered exactly as every
model is; the lineage of a served prediction (bento, request id) is tested with the deployed
bento in serving/test_lineage_served.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from heat_platform.cli import main
from heat_platform.data.catalog import Catalog
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import materialize

EXPERIMENT = "inclusion"
CRUDE = {"ops": {"classical_inversion": {"config": {"grid": 2, "n_steps": 2}}}}
pytestmark = pytest.mark.slow  # fits a (crude) model


@pytest.fixture
def registered(platform_paths, sensor, resources) -> str:
    """One validated batch, its training set and a registered model version (v1)."""
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=1)
    sensor.until_quiet()
    result = materialize(sensor.instance, resources, ["training_set", "classical_inversion"],
                         EXPERIMENT, run_config=CRUDE)
    return result.output_for_node("classical_inversion").version


def lineage(platform_paths, capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["--home", str(platform_paths.home), "lineage", *args])
    return status, capsys.readouterr().out


@contextlib.contextmanager
def altered(path: str | Path) -> Iterator[Path]:
    """One byte of a stored file flipped (blobs are read-only: made writable first), put back
    after."""
    path = Path(path)
    original, mode = path.read_bytes(), path.stat().st_mode
    path.chmod(mode | stat.S_IWUSR)
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    try:
        yield path
    finally:
        path.write_bytes(original)
        path.chmod(mode)


def test_a_model_version_leads_to_its_raw_files_and_verify_names_what_changed(
        registered, platform_paths, capsys):
    status, out = lineage(platform_paths, capsys, f"{EXPERIMENT}:{registered}", "--json",
                          "--verify")
    assert status == 0, out
    chain = json.loads(out)
    assert chain["verification"] == [] and len(chain["checked"]) >= 6
    (model,) = chain["models"]
    assert (model["model"]["name"], model["model"]["version"], model["model"]["kind"]) == (
        "heat-model-inclusion", registered, "classical")
    run = model["mlflow_run"]
    assert run["git_commit"] and run["params"]["classical.penalty"] == "laplacian"
    assert "score.validation_rmse" in run["metrics"] and "model/model.pt" in run["artifacts"]
    spec = model["training_set"]["problem_spec"]  # (not recorded by a classical fit: inferred)
    assert spec["sha256"] == Catalog(platform_paths.catalog_url).latest_spec(EXPERIMENT).sha256
    assert run["packages"]["torch"] and run["data_version"] == model["training_set"][
        "data_version"]
    current = Catalog(platform_paths.catalog_url).current_version(EXPERIMENT, "b001")
    (raw,) = model["raw_files"]
    assert (raw["batch"], raw["sha256"], raw["blob_path"]) == ("b001", current.sha256,
                                                               current.blob_path)
    assert len(raw["sha256"]) == 64 and raw["source_path"].endswith("inclusion/b001.parquet")
    assert raw["ingested_at"] and raw["status"] == "validated"
    assert raw["n_valid"] + raw["n_quarantined"] == raw["n_rows"] == 3200
    assert raw["n_train"] + raw["n_validation"] == raw["n_valid"]
    files = model["training_set"]["files"]
    assert set(files) == {"train.parquet", "validation.parquet", "scaling.json"}

    # the same chain, for people, from the registered model's own name
    status, text = lineage(platform_paths, capsys, f"heat-model-{EXPERIMENT}/{registered}")
    assert status == 0 and f"batch b001: sha256 {current.sha256}" in text
    assert f"file train.parquet sha256 {files['train.parquet']}" in text

    # one changed file at a time, each named; nothing else reported
    training_file = Path(model["training_set"]["directory"]) / "train.parquet"
    artifact = unquote(urlparse(model["model"]["artifact"]).path)
    for path, what in ((raw["blob_path"], "raw copy of batch 'b001'"),
                       (training_file, "training set file"), (artifact, "model artifact")):
        with altered(path):
            status, out = lineage(platform_paths, capsys, f"{EXPERIMENT}:{registered}",
                                  "--json", "--verify")
        assert status == 1
        (mismatch,) = json.loads(out)["verification"]
        assert mismatch.startswith(f"{what}: {path} has sha256 ")
    assert lineage(platform_paths, capsys, f"{EXPERIMENT}:{registered}", "--verify")[0] == 0


def test_a_reference_that_names_nothing_says_what_it_accepts(registered, platform_paths, capsys):
    assert main(["--home", str(platform_paths.home), "lineage", "3"]) == 2
    assert "name its experiment (--experiment)" in capsys.readouterr().err
    assert main(["--home", str(platform_paths.home), "lineage", f"{EXPERIMENT}:9"]) == 2
    assert "has no heat-model-inclusion v9" in capsys.readouterr().err
    assert main(["--home", str(platform_paths.home), "lineage", "0123456789abcdef"]) == 2
    assert "only a sample of requests is logged" in capsys.readouterr().err
    status, out = lineage(platform_paths, capsys, registered, "--experiment", EXPERIMENT)
    assert status == 0 and out.startswith("model heat-model-inclusion v1 (classical)")
    assert os.environ["HEAT_PLATFORM_HOME"] == str(platform_paths.home)
