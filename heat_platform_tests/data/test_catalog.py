"""Catalog: versions, history, the training set's input, and several writers at once."""

from __future__ import annotations

import multiprocessing

import sqlalchemy as sa

from heat_platform.data.catalog import Catalog, batch_versions


def sha(char: str) -> str:
    return char * 64


def ingest(catalog: Catalog, batch: str, digest: str, experiment: str = "exp1"):
    return catalog.record_ingestion(
        experiment,
        batch,
        sha256=digest,
        source_path=f"/landing/{experiment}/{batch}.csv",
        blob_path=f"/store/{digest}.csv",
        size_bytes=10,
        run_id="run-1",
    )


def test_tables_are_created_with_wal(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'platform.db'}")
    with catalog.engine.connect() as db:
        assert db.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert db.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert "batch_versions" in sa.inspect(catalog.engine).get_table_names()
    assert Catalog(tmp_path / "platform.db").experiments() == []  # reopening is fine


def test_history_keeps_every_version_and_current_is_the_latest(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    first = ingest(catalog, "b1", sha("a"))
    assert ingest(catalog, "b1", sha("a")).id == first.id  # same content: no new version
    ingest(catalog, "b1", sha("b"))
    assert catalog.current_version("exp1", "b1").sha256 == sha("b")
    assert [v.sha256 for v in catalog.history("exp1", "b1")] == [sha("a"), sha("b")]

    ingest(catalog, "b1", sha("a"))  # the lab put the first file back
    assert catalog.current_version("exp1", "b1").sha256 == sha("a")
    history = catalog.history("exp1", "b1")
    assert [v.sha256 for v in history] == [sha("a"), sha("b")]  # reused, not duplicated
    assert history[0].ingested_at < history[0].last_ingested_at
    assert catalog.current_version("exp1", "nope") is None


def test_validated_batches_never_fall_back_to_an_older_valid_version(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    for batch, digest in (("b1", sha("a")), ("b2", sha("c")), ("b3", sha("d"))):
        ingest(catalog, batch, digest)
        catalog.record_validation(
            "exp1",
            batch,
            sha256=digest,
            status="validated",
            n_valid=10,
            n_quarantined=0,
            validated_path=f"/store/{digest}.parquet",
        )
    ingest(catalog, "b1", sha("b"))
    catalog.record_validation(
        "exp1", "b1", sha256=sha("b"), status="rejected", message="40% of rows quarantined"
    )
    ingest(catalog, "b3", sha("e"))  # new version, not validated yet
    ingest(catalog, "other", sha("f"), experiment="exp2")

    chosen = catalog.validated_batches("exp1")
    assert [v.batch for v in chosen.included] == ["b2"]
    assert {e.version.batch: e.reason for e in chosen.excluded} == {
        "b1": f"current version {sha('b')[:12]} was rejected: 40% of rows quarantined",
        "b3": f"current version {sha('e')[:12]} is not validated yet",
    }
    # the older valid version of b1 is still retrievable, just not used
    assert catalog.history("exp1", "b1")[0].status == "validated"
    assert catalog.experiments() == ["exp1", "exp2"]


def test_record_validation_of_an_unknown_version_fails_loudly(tmp_path):
    catalog = Catalog(tmp_path / "platform.db")
    try:
        catalog.record_validation("exp1", "b1", sha256=sha("a"), status="validated")
    except LookupError as error:
        assert "no ingested version" in str(error)
    else:  # pragma: no cover
        raise AssertionError("expected LookupError")


def _writer(url: str, worker: int) -> None:
    catalog = Catalog(url)
    for i in range(15):
        digest = f"{worker:02d}{i:062d}"
        ingest(catalog, f"b{i % 3}", digest)
        catalog.record_validation("exp1", f"b{i % 3}", sha256=digest, status="validated")


def test_several_processes_can_write_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    # A catalog created (and dropped) in the parent before fork: with a pooled engine its
    # connection could be garbage-collected in a child, which then removed the WAL and lost
    # every child's rows about half the time. The catalog uses no pool on SQLite for this.
    Catalog(url)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(url, w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with Catalog(url).engine.connect() as db:
        assert db.execute(sa.select(sa.func.count()).select_from(batch_versions)).scalar() == 45
