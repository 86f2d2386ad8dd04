"""End to end without Dagster: landing -> store -> catalog -> validation -> training set.
The property under test: every row of every file dropped is accounted for."""

from __future__ import annotations

import time

import polars as pl

from heat_platform.data import (
    BatchInput,
    BatchReadError,
    Catalog,
    ContentStore,
    LandingZone,
    ValidationRules,
    build_training_set,
    fingerprint,
    observe,
    read_batch,
    split_rows,
)
from heat_platform_tests.data.conftest import BOUNDS, clean_frame


def run_tick(zone: LandingZone, state: dict, now_ns: int):
    seen = observe(state, zone.scan().files, now_ns=now_ns)
    return fingerprint(seen.state, seen.ready, hasher=zone.digest)


def ingest_and_validate(zone, store, catalog, landing_file, rules):
    with zone.open(landing_file) as handle:
        blob = store.put_file(handle, ext=landing_file.ext)
    catalog.record_ingestion(
        landing_file.experiment,
        landing_file.batch,
        sha256=blob.sha256,
        source_path=landing_file.path,
        blob_path=blob.path,
        size_bytes=blob.size,
    )
    try:
        raw = read_batch(blob.path, max_file_bytes=rules.max_file_bytes, max_rows=rules.max_rows)
    except BatchReadError as error:
        return catalog.record_validation(
            landing_file.experiment,
            landing_file.batch,
            sha256=blob.sha256,
            status="rejected",
            message=error.message,
        ), None
    split = split_rows(raw.frame, BOUNDS, rules)
    valid, quarantine = store.put_frame(split.valid), store.put_frame(split.quarantined)
    version = catalog.record_validation(
        landing_file.experiment,
        landing_file.batch,
        sha256=blob.sha256,
        status="validated" if split.passed else "rejected",
        n_rows=raw.n_rows,
        n_valid=split.valid.height,
        n_quarantined=split.quarantined.height,
        validated_path=valid.path,
        quarantine_path=quarantine.path,
        message="; ".join(split.summary["problems"]) or None,
    )
    return version, split


def test_every_dropped_row_is_accounted_for(tmp_path):
    landing = tmp_path / "landing" / "exp1"
    landing.mkdir(parents=True)
    (landing / "problem.yaml").write_text("name: exp1\n")
    clean_frame(60, seed=1).write_parquet(landing / "run 1.parquet")
    dirty = clean_frame(60, seed=2, sensor_prefix="q").with_columns(pl.all().cast(pl.String))
    dirty = dirty.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("abc")).otherwise(pl.col("u")).alias("u")
    )
    dirty.write_csv(landing / "mesure été.csv")
    (landing / "empty.csv").write_text("")

    zone, store = LandingZone(tmp_path / "landing"), ContentStore(tmp_path / "store")
    catalog = Catalog(tmp_path / "platform.db")
    rules = ValidationRules(min_rows=10)
    state = run_tick(zone, {}, time.time_ns()).state
    prints = run_tick(zone, state, time.time_ns())
    assert sorted(v.file.batch for v in prints.new) == ["empty", "mesure été", "run 1"]

    splits = {}
    for version in prints.new:
        record, split = ingest_and_validate(zone, store, catalog, version.file, rules)
        assert record.sha256 == version.sha256  # what the sensor saw is what was stored
        splits[version.file.batch] = split

    empty = catalog.current_version("exp1", "empty")
    assert empty.status == "rejected" and "is 0 bytes long (an empty file)" in empty.message
    for batch, n in (("run 1", 60), ("mesure été", 60)):
        split = splits[batch]
        assert split.valid.height + split.quarantined.height == n
    assert splits["mesure été"].quarantined["reason"].to_list() == ["u is not a number ('abc')"]

    chosen = catalog.validated_batches("exp1")
    assert [v.batch for v in chosen.included] == ["mesure été", "run 1"]
    assert [e.version.batch for e in chosen.excluded] == ["empty"]
    ts = build_training_set(
        [BatchInput(v.batch, v.sha256, pl.read_parquet(v.validated_path)) for v in chosen.included],
        BOUNDS,
    )
    assert ts.train.height + ts.validation.height == 119
