"""PostgreSQL for real: the catalog (with its append-only audit log), the Dagster instance and the
MLflow backend on a PostgreSQL server this test session starts on loopback (Debian's
`postgresql`; .ci/run installs it), the whole asset graph run on them.

Skipped, with the reason in pytest's summary, only where PostgreSQL is not installed.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from heat_platform.data.catalog import Catalog, audit_log, batch_versions
from heat_platform.monitoring.drift import read_serving_log
from heat_platform.paths import PROJECT_ROOT
from heat_platform.polling import wait_until
from heat_platform.serving.server import BentoServer
from heat_platform.settings import child_environment
from heat_platform_tests.assets.conftest import EXPERIMENT, RELAXED, TINY
from heat_platform_tests.conftest import SensorDriver, latest_materialization, materialize
from heat_platform_tests.data.test_catalog import _writer, ingest, sha

POSTGRES_INSTANCE = PROJECT_ROOT / "deploy" / "dagster-postgres.yaml"

# every test here talks to a real PostgreSQL server on loopback
pytestmark = pytest.mark.server


def test_the_catalog_keeps_every_version_on_postgresql(postgres_database):
    catalog = Catalog(postgres_database("catalog"))
    assert catalog.engine.dialect.name == "postgresql"
    first = ingest(catalog, "b1", sha("a"))
    assert ingest(catalog, "b1", sha("a")).id == first.id
    ingest(catalog, "b1", sha("b"))
    catalog.record_validation("exp1", "b1", sha256=sha("b"), status="validated", n_valid=10)
    ingest(catalog, "b1", sha("a"))  # the first file is back: current again, not duplicated
    assert [v.sha256 for v in catalog.history("exp1", "b1")] == [sha("a"), sha("b")]
    assert catalog.current_version("exp1", "b1").sha256 == sha("a")
    assert catalog.current_version("exp1", "b1").ingested_at.tzinfo is not None
    chosen = catalog.validated_batches("exp1")
    assert chosen.included == [] and "not validated yet" in chosen.excluded[0].reason
    spec = catalog.record_spec("exp1", sha256=sha("c"), blob_path="/store/c.yaml", valid=True)
    assert catalog.latest_spec("exp1") == spec
    assert catalog.start_regime("exp1", 3, reason="drift") == 3
    assert catalog.regime_start("exp1") == 3


def test_the_audit_log_refuses_update_delete_and_truncate_on_postgresql(postgres_database):
    catalog = Catalog(postgres_database("audit"))
    entry = catalog.audit("exp1", "promote", actor="gate", reasons=["better"],
                          model_name="heat-pinn-exp1", to_version="1")
    assert catalog.audit_trail("exp1") == [entry]
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                      "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), \
                catalog.engine.begin() as db:
            db.exec_driver_sql(statement)
    with catalog.engine.connect() as db:
        assert db.execute(sa.select(audit_log.c.actor)).scalars().all() == ["gate"]
    # a second catalog on the same database (another pod) finds the triggers in place
    assert Catalog(catalog.url).audit_trail("exp1") == [entry]


def test_the_platforms_role_appends_to_the_audit_log_and_cannot_rewrite_or_drop_it(
        postgres_database):
    """The catalog's owner creates the tables and grants the platform's role (the documented
    `heat-platform catalog-grant`); the platform then runs as that role, which writes every
    table it needs but, not owning audit_log, cannot rewrite, empty, drop or alter it."""
    owner_url = postgres_database("roles")
    role, password = f"heat_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    owner = sa.create_engine(owner_url)
    with owner.begin() as db:
        db.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    owner.dispose()

    def catalog_grant(who: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name("heat-platform")), "catalog-grant", who],
            capture_output=True, text=True, timeout=120,
            env=child_environment(HEAT_PLATFORM_DB_URL=owner_url))

    granted = catalog_grant(role)
    assert granted.returncode == 0, granted.stderr
    assert f"GRANT SELECT, INSERT ON audit_log TO {role};" in granted.stdout
    mine = catalog_grant(sa.make_url(owner_url).username)  # the owner is no platform role
    assert mine.returncode == 2 and "owns the catalog's tables" in mine.stderr

    app_url = sa.make_url(owner_url).set(username=role, password=password)
    catalog = Catalog(app_url.render_as_string(hide_password=False))
    ingest(catalog, "b1", sha("a"))  # every table the platform writes, as the role
    ingest(catalog, "b1", sha("b"))
    catalog.record_validation("exp1", "b1", sha256=sha("b"), status="validated", n_valid=10)
    catalog.record_spec("exp1", sha256=sha("c"), blob_path="/store/c.yaml", valid=True)
    assert catalog.start_regime("exp1", 2, reason="drift") == 2
    entry = catalog.audit("exp1", "promote", actor="gate", reasons=["better"],
                          model_name="heat-model-exp1", to_version="1")
    second = catalog.audit("exp1", "deploy", actor="sensor", reasons=["champion"],
                           model_name="heat-model-exp1", to_version="1")
    assert catalog.audit_trail("exp1") == [second, entry]

    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                      "TRUNCATE audit_log", "DROP TABLE audit_log",
                      "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                      "DROP TRIGGER audit_log_no_update_or_delete ON audit_log",
                      "SELECT setval('audit_log_id_seq', 1)"):
        with pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"), \
                catalog.engine.begin() as db:
            db.exec_driver_sql(statement)
    assert Catalog(owner_url).audit_trail("exp1") == [second, entry]


def test_several_processes_write_the_postgresql_catalog_at_once(postgres_database):
    url = postgres_database("writers")
    Catalog(url).engine.dispose()  # tables created once, before the writers start
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(url, w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with Catalog(url).engine.connect() as db:
        sequence = db.execute(sa.select(batch_versions.c.ingest_seq)).scalars().all()
    # every ingestion got its own place in the order ("became current" would be ambiguous)
    assert len(sequence) == 45 and len(set(sequence)) == 45


@pytest.mark.slow  # trains a model; deployed_bento also starts `bentoml serve`
def test_the_asset_graph_runs_end_to_end_on_postgresql(platform_paths, postgres_database,
                                                      monkeypatch, tmp_path):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from heat_platform.assets.partitions import batch_partition
    from heat_platform.instance import prepare_instance
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.resources import build_resources, resolved
    from heat_platform.simulate import simulate_to_landing

    urls = {name: postgres_database(name) for name in ("dagster", "catalog", "mlflow")}
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", urls["dagster"])
    monkeypatch.setenv("HEAT_PLATFORM_DB_URL", urls["catalog"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", urls["mlflow"])
    prepare_instance(platform_paths, POSTGRES_INSTANCE)

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        # the kubernetes mode's arguments: it refuses anything but database servers
        resources = resolved(build_resources(platform_paths, "kubernetes"))
        assert resources["storage"].catalog_url == urls["catalog"]
        simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=1)
        ingested = SensorDriver(instance, resources).until_quiet()
        assert ingested and all(result.success for result in ingested)
        materialize(instance, resources, ["training_set", "classical_inversion"], EXPERIMENT)
        trained = materialize(
            instance, resources, ["pinn_model", "gate_report", "champion_model"], EXPERIMENT,
            run_config={"ops": {"pinn_model": {"config": TINY}, "gate_report": {"config": RELAXED}}})
        assert trained.output_for_node("gate_report").decision == "promote"
        deployed = materialize(instance, resources, ["deployed_bento"], EXPERIMENT)
        bento = deployed.output_for_node("deployed_bento")["bento"]
        batch = batch_partition(EXPERIMENT, "b001")
        materialize(instance, resources, ["drift_report"], batch)
        drift = latest_materialization(instance, "drift_report", batch).metadata
        assert drift["drift"].value is False and drift["champion version"].value == "1"
        run_ids = {deployed.run_id, trained.run_id}

    # Everything is in PostgreSQL: a fresh instance (another pod) sees the runs and assets...
    with dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as fresh:
        assert {run.run_id for run in fresh.get_runs()} >= run_ids
        assert latest_materialization(fresh, "deployed_bento", EXPERIMENT).metadata[
            "bento"].value == bento
    # ...the catalog's versions and decisions...
    catalog = Catalog(urls["catalog"])
    (version,) = catalog.current_versions(EXPERIMENT)
    assert version.status == "validated"
    assert [(e.action, e.phase) for e in reversed(catalog.audit_trail(EXPERIMENT))] == [
        ("promote", "intent"), ("promote", "confirmed"), ("deploy", None)]
    # ...and MLflow's runs and registry, which another process reads back
    registry = ModelRegistry(resources["mlflow"].store(), catalog)
    assert registry.champion(EXPERIMENT).version == "1"
    from heat_platform.models.audit_log import AuditLog

    audit = AuditLog(catalog, resources["mlflow"].store().client()).verify(EXPERIMENT)
    assert audit.ok, audit.problems  # the hash chain holds on PostgreSQL too
    with sa.create_engine(urls["mlflow"]).connect() as db:
        assert db.exec_driver_sql("SELECT count(*) FROM runs").scalar() >= 2  # PINN, classical
        assert db.exec_driver_sql("SELECT name FROM registered_models").scalars().all() == [
            f"heat-model-{EXPERIMENT}"]
    # no SQLite database took their place anywhere under the platform home
    assert [path for path in platform_paths.home.rglob("*") if _is_sqlite(path)] == []

    # The bento image's contract (deploy/docker/bento.Dockerfile): the exported bento, unpacked,
    # served by `bentoml serve <directory>` with an empty BentoML home, the API key from the
    # environment (the Secret) and the serving log on the platform home's volume, where drift
    # monitoring reads it.
    image = tmp_path / "image"
    (image / "bentoml-home").mkdir(parents=True)
    subprocess.run([str(Path(sys.executable).with_name("bentoml")), "export", bento,
                    str(image / "heat_service.bento")], check=True, capture_output=True,
                   env=child_environment(BENTOML_HOME=str(platform_paths.bentoml_home)))
    with tarfile.open(image / "heat_service.bento") as archive:
        archive.extractall(image / "bento", filter="data")
    serving_log = platform_paths.serving / "log"
    with BentoServer.start(str(image / "bento"), bentoml_home=image / "bentoml-home",
                           log_dir=image / "logs", working_dir=image,
                           env={"HEAT_SERVING_API_KEY": "from-the-secret",
                                "HEAT_SERVING_LOG_DIR": str(serving_log),
                                "HEAT_SERVING_LOG_SAMPLE": "1.0"}) as server:
        server.wait_ready()
        point = {"x": 1.0, "y": 0.5, "t": 0.25}
        assert httpx.get(f"{server.url}/predict-temperature", params=point).status_code == 401
        answer = httpx.get(f"{server.url}/predict-temperature", params=point,
                           headers={"X-API-Key": "from-the-secret"})
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        logged = wait_until(lambda: read_serving_log(serving_log, EXPERIMENT).height, timeout_s=30,
                            interval_s=0.5, what="the request in the serving log")
    assert logged >= 1


def _is_sqlite(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\0"
