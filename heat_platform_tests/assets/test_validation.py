"""Bad input, each kind dropped next to good batches and taken through the real pipeline.

Every file gets a clear, specific error or quarantine record, the original is kept, and the
other partitions (and the training set) keep working.
"""

import os
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from heat_platform.assets.features import training_set
from heat_platform.data.contract import BatchReadError
from heat_platform.heat.synthetic import SCENARIOS, simulate_batch
from heat_platform.paths import PlatformPaths
from heat_platform.simulate import write_batch, write_problem
from heat_platform_tests.conftest import SensorDriver, latest_materialization

GOOD = simulate_batch(SCENARIOS["inclusion"], seed=1, sensors=(6, 4), n_times=5).columns()
IMAGE = "![](http://evil.example/pixel.png)"


def _good(**changes) -> pl.DataFrame:
    frame = pl.DataFrame(GOOD)
    return frame.with_columns(**changes) if changes else frame


def _csv(frame: pl.DataFrame) -> str:
    return frame.write_csv()


BAD_FILES = {
    "zero-bytes.csv": b"",
    "empty.parquet": pl.DataFrame(schema={c: pl.Float64 for c in "xytu"}),
    "truncated.parquet": "truncated",
    "header-only.csv": b"x,y,t,u,sensor_id,sigma\n",
    "wrong-columns.csv": _csv(_good().rename({"u": "temp"})).encode(),
    "strings.csv": _csv(_good().with_columns(pl.col("u").cast(pl.String))).replace(
        _csv(_good().with_columns(pl.col("u").cast(pl.String))).splitlines()[3].split(",")[3], "abc",
        1).encode(),
    "nan-inf.csv": _csv(_good(u=pl.when(pl.int_range(pl.len()) == 2).then(float("nan"))
                              .when(pl.int_range(pl.len()) == 5).then(float("inf"))
                              .otherwise(pl.col("u")))).encode(),
    "outside.csv": _csv(_good(x=pl.when(pl.int_range(pl.len()) == 1).then(5.0)
                              .otherwise(pl.col("x")))).encode(),
    "duplicates.csv": _csv(pl.concat([_good(), _good().head(2)])).encode(),
    "bad-sigma.csv": _csv(_good(sigma=pl.when(pl.int_range(pl.len()) < 2).then(-0.01)
                                .when(pl.int_range(pl.len()) == 2).then(0.0)
                                .otherwise(pl.col("sigma")))).encode(),
    "mostly-bad.csv": _csv(_good(x=pl.when(pl.int_range(pl.len()) < 60).then(9.0)
                                 .otherwise(pl.col("x")))).encode(),
    # text that would be Markdown: an image fetch, a link, a cell separator
    "markdown.csv": _csv(_good(u=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(IMAGE))
                               .when(pl.int_range(pl.len()) == 2).then(pl.lit("1|2 [x](http://evil.example)"))
                               .otherwise(pl.col("u").cast(pl.String)))).encode(),
    "markdown-header.csv": _csv(_good().rename({"u": IMAGE})).encode(),
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """One instance, one experiment: two good batches and every bad file, through the sensor."""
    import dagster as dg

    from heat_platform.instance import prepare_instance
    from heat_platform.resources import build_resources, resolved

    paths = PlatformPaths(tmp_path_factory.mktemp("validation") / "platform").ensure()
    saved = {k: os.environ.get(k) for k in ("HEAT_PLATFORM_HOME", "DAGSTER_HOME")}
    prepare_instance(paths)
    landing = paths.landing
    write_problem(landing, "inclusion", "inclusion")
    write_batch(landing, "inclusion", "good-1", GOOD)
    write_batch(landing, "inclusion", "good-2",
                simulate_batch(SCENARIOS["inclusion"], seed=2, sensors=(6, 4), n_times=5).columns())
    for name, content in BAD_FILES.items():
        target = landing / "inclusion" / name
        if isinstance(content, pl.DataFrame):
            content.write_parquet(target)
        elif content == "truncated":
            _good().write_parquet(target)
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        else:
            target.write_bytes(content)
    try:
        with dg.DagsterInstance.get() as instance:
            resources = resolved(build_resources(paths))
            driver = SensorDriver(instance, resources)
            outcomes = driver.until_quiet()
            yield paths, instance, resources, outcomes
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _version(ingested, batch):
    _, _, resources, _ = ingested
    return resources["storage"].catalog().current_version("inclusion", batch)


def _check_evaluations(instance, asset, name, partition=None) -> list:
    """Evaluations of one asset check (optionally of one partition), newest first."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), name)
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    return [r.evaluation for r in records
            if isinstance(r.evaluation, dg.AssetCheckEvaluation)
            and (partition is None or r.partition == partition)]


@pytest.mark.parametrize(("name", "kind"), [
    ("zero-bytes.csv", "zero_bytes"), ("empty.parquet", "no_rows"),
    ("truncated.parquet", "corrupt"), ("header-only.csv", "no_rows"),
    ("wrong-columns.csv", "columns"), ("markdown-header.csv", "columns"),
])
def test_unreadable_files_fail_their_partition_with_a_specific_error(ingested, name, kind):
    paths, instance, _, _ = ingested
    batch = name.rsplit(".", 1)[0]
    version = _version(ingested, batch)
    assert version.status == "rejected" and kind in version.message
    assert os.path.exists(version.blob_path) and (paths.landing / "inclusion" / name).exists()
    raw = latest_materialization(instance, "raw_measurements", f"{batch}|inclusion")
    assert raw.metadata["sha256"].value == version.sha256  # the bytes are kept either way
    assert latest_materialization(instance, "validated_measurements", f"{batch}|inclusion") is None
    if name == "wrong-columns.csv":
        assert "'u'" in version.message and "temp" in version.message


@pytest.mark.parametrize(("name", "reason"), [
    ("strings.csv", "not a number ('abc')"),
    ("nan-inf.csv", "not finite"),
    ("outside.csv", "outside the domain"),
    ("duplicates.csv", "duplicate"),
    ("bad-sigma.csv", "sigma"),
])
def test_bad_rows_are_quarantined_with_their_reason(ingested, name, reason):
    _, instance, _, _ = ingested
    batch = name.rsplit(".", 1)[0]
    version = _version(ingested, batch)
    assert version.status == "validated", version.message
    quarantined = pl.read_parquet(version.quarantine_path)
    assert quarantined.height >= 1
    assert all(reason in r for r in quarantined["reason"]), quarantined["reason"].to_list()
    valid = pl.read_parquet(version.validated_path)
    assert valid.height + quarantined.height == 120 + (2 if name == "duplicates.csv" else 0)
    assert np.isfinite(valid.select("x", "y", "t", "u").to_numpy()).all()
    metadata = latest_materialization(instance, "quarantined_measurements",
                                      f"{batch}|inclusion").metadata
    assert metadata["dagster/row_count"].value == quarantined.height


def test_too_many_bad_rows_fail_the_partition_and_keep_the_quarantine(ingested):
    _, instance, _, _ = ingested
    version = _version(ingested, "mostly-bad")
    assert version.status == "rejected" and "above the maximum share" in version.message
    assert pl.read_parquet(version.quarantine_path).height == 60
    [check] = _check_evaluations(instance, "validated_measurements",
                                 "quarantine_share_within_limit", "mostly-bad|inclusion")
    assert not check.passed and "50.0%" in check.description


def test_great_expectations_contract_links_its_data_docs_over_http(ingested):
    """The Data Docs are MLflow artifacts: the check links the MLflow UI page rendering the
    validation page and the page's bytes from the MLflow server, not a file:// path."""
    from urllib.parse import parse_qs, urlparse

    _, instance, resources, _ = ingested
    passed = [e for e in _check_evaluations(instance, "validated_measurements",
                                            "great_expectations_contract") if e.passed]
    # the good batches, the six with a few quarantined rows, and the mostly-bad one, whose
    # remaining rows are fine (it fails on the quarantine share, not on the contract)
    assert len(passed) == 9
    store = resources["mlflow"].store()
    for evaluation in passed:
        metadata = evaluation.metadata
        page = Path(metadata["data docs (file)"].value)
        ui, http = metadata["data docs (MLflow)"].value, metadata["data docs (HTTP)"].value
        assert ui.startswith(f"{store.ui_url}/#/experiments/") and "/artifactPath/data_docs/" \
            "validations/" in ui
        query = parse_qs(urlparse(http).query)
        assert http.startswith(f"{store.ui_url}/get-artifact?")
        (run_id,), (artifact,) = query["run_uuid"], query["path"]
        assert ui.endswith(f"/runs/{run_id}/artifactPath/{artifact}")
        logged = store.client().download_artifacts(run_id, artifact, str(page.parent / "back"))
        assert Path(logged).read_bytes() == page.read_bytes() and b"<html" in page.read_bytes()
        tags = store.client().get_run(run_id).data.tags
        assert tags["heat_platform.kind"] == "report"
        assert tags["heat_platform.partition"].endswith("|inclusion")


def test_other_partitions_keep_working_and_the_training_set_lists_what_it_left_out(ingested):
    _, instance, resources, outcomes = ingested
    assert _version(ingested, "good-1").status == "validated"
    assert _version(ingested, "good-2").status == "validated"
    failed = sum(not o.success for o in outcomes)
    assert failed == 7  # six unreadable files and the mostly-bad one
    result = dg.materialize([training_set], instance=instance, partition_key="inclusion",
                            resources=resources)
    metadata = result.asset_materializations_for_node("training_set")[0].metadata
    table = metadata["partitions"].value
    assert "good-1" in table and "good-2" in table and "strings" in table
    assert "mostly-bad" not in table and "zero-bytes" not in table
    assert "mostly-bad" in metadata["excluded"].value


def test_quarantine_reasons_are_data_and_user_text_never_becomes_markdown(ingested):
    """A reading of ``![](http://...)`` or ``1|2`` is shown as written: as a value in a table
    of data, and, where user text meets Markdown (the training set's list of excluded batches
    quotes the column names of a rejected file), escaped, so that rendering it as the UI does
    fetches no image, makes no link and keeps every row of the table in its cells."""
    from markdown_it import MarkdownIt

    _, instance, resources, _ = ingested
    examples = latest_materialization(instance, "quarantined_measurements",
                                      "markdown|inclusion").metadata["examples"]
    assert isinstance(examples, dg.TableMetadataValue)
    reasons = [record.data["reason"] for record in examples.records]
    assert reasons == [f"u is not a number ('{IMAGE}')",
                       "u is not a number ('1|2 [x](http://evil.example)')"]

    result = dg.materialize([training_set], instance=instance, partition_key="inclusion",
                            resources=resources)
    excluded = result.asset_materializations_for_node("training_set")[0].metadata["excluded"]
    assert "evil.example" in excluded.value  # the reason quotes the user's column name...
    html = MarkdownIt("commonmark").enable("table").render(excluded.value)
    assert "<img" not in html and "<a " not in html  # ...as text
    assert "![](http://evil.example/pixel.png)" in html
    rows = html.split("<tr>")[2:]
    assert all(row.count("<td>") == 2 for row in rows)  # batch, reason: no cell broke out


def test_a_file_over_the_size_limit_is_reported_and_never_copied(platform_paths, dagster_instance,
                                                                 storage, capsys):
    from heat_platform.data.ingest import ingest_batch
    from heat_platform.resources import build_resources, resolved
    from heat_platform.resources.storage import PlatformStorage

    limited = PlatformStorage(home=storage.home, max_file_bytes=1000)
    resources = {**resolved(build_resources(platform_paths)), "storage": limited}
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    write_batch(platform_paths.landing, "inclusion", "big", GOOD)
    driver = SensorDriver(dagster_instance, resources)
    for _ in range(3):
        result, _ = driver.tick()
        assert not any("big" in r.run_key for r in result.run_requests or [])
    logged = capsys.readouterr().err  # the sensor's warnings name every file it did not take
    assert "big.parquet: not read: too_large: 'big.parquet' is" in logged
    assert "above the limit of 1000 bytes" in logged
    assert storage.catalog().current_version("inclusion", "big") is None
    assert not list(platform_paths.blobs.rglob("*.parquet"))  # not a byte copied
    # asked for anyway (by hand), the ingestion refuses before it copies anything
    with pytest.raises(BatchReadError, match="too_large"):
        ingest_batch(limited.landing(), limited.store(), limited.catalog(), "inclusion", "big",
                     rules=limited.rules())
    assert not list(platform_paths.blobs.rglob("*.parquet"))
