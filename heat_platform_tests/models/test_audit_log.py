"""The audit log is tamper-evident and the champion alias cannot drift from it.

Real stores throughout: the platform's SQLite catalog and an MLflow SQLite registry whose
versions are registered the way training registers them (a run, its artifact, its sha256).
What an attacker with write access to the catalog file does is done with Python's own sqlite3
module, outside the platform's connections.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from heat_platform.cli import main
from heat_platform.data.catalog import Catalog
from heat_platform.models import tracking
from heat_platform.models.audit_log import HEAD_TAG
from heat_platform.models.registry import ModelRegistry, RegistryError
from heat_platform.names import registered_model_name

EXPERIMENT = "plate"


def register(store, directory: Path, experiment: str = EXPERIMENT, kind: str = "pinn") -> str:
    """A new version of the experiment's registered model, as training registers one."""
    path = directory / f"model-{len(list(directory.glob('model-*')))}.pt"
    path.write_bytes(path.name.encode() * 50)
    tags = tracking.run_tags(experiment=experiment, kind=kind, data_version="d" * 64,
                             partitions=["b001"], dagster_run_id="run")
    with store.start_run(experiment, "test", tags):
        return tracking.register_model(store.mlflow(), path, registered_model_name(experiment),
                                       kind=kind, tags={"data_version": "d" * 64})


@pytest.fixture
def registry(resources, platform_paths) -> ModelRegistry:
    return ModelRegistry(resources["mlflow"].store(), Catalog(platform_paths.catalog_url))


@pytest.fixture
def decided(registry, tmp_path) -> ModelRegistry:
    """v1 promoted, v2 rejected, v3 promoted, v3 deployed: seven entries (two moves)."""
    store = registry.tracking
    for _ in range(3):
        register(store, tmp_path)
    registry.promote(EXPERIMENT, "1", actor="gate", reasons=["first sound model"])
    registry.reject(EXPERIMENT, "2", actor="gate", reasons=["residual 3.1 > 0.2"])
    registry.promote(EXPERIMENT, "3", actor="gate", reasons=["better than v1"])
    registry.record_deployment(EXPERIMENT, "3", "heat_service:abc", actor="dagster")
    return registry


def verify(platform_paths, capsys) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["--home", str(platform_paths.home), "audit", "--verify"])
    return status, capsys.readouterr().out


def attacker(platform_paths) -> sqlite3.Connection:
    """Python's sqlite3 on the catalog file: no platform authorizer, the triggers still there."""
    return sqlite3.connect(platform_paths.home / "platform.db", isolation_level=None)


def test_every_decision_is_chained_and_its_head_recorded_outside_the_table(decided,
                                                                          platform_paths, capsys):
    chain = decided.catalog.audit_chain(EXPERIMENT)
    assert [(e.action, e.phase) for e in chain] == [
        ("promote", "intent"), ("promote", "confirmed"), ("reject", None),
        ("promote", "intent"), ("promote", "confirmed"), ("deploy", None)]
    assert chain[1].intent_id == chain[0].id and chain[4].intent_id == chain[3].id
    assert all(later.prev_hash == earlier.entry_hash
               for earlier, later in itertools.pairwise(chain))
    tags = decided.client.get_registered_model(registered_model_name(EXPERIMENT)).tags
    assert json.loads(tags[HEAD_TAG]) == {"entries": 6, "hash": chain[-1].entry_hash}

    status, out = verify(platform_paths, capsys)
    assert status == 0, out
    assert out.startswith("plate: OK: 6 entries")
    capsys.readouterr()
    assert main(["--home", str(platform_paths.home), "audit"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 6 and "promote/intent" in printed[0] and "reject " in printed[2]


def test_the_platform_refuses_every_statement_that_would_rewrite_the_log(decided,
                                                                         platform_paths):
    engine = decided.catalog.engine
    refused = {
        "INSERT OR REPLACE INTO audit_log (id, at, experiment, action, actor) "
        "VALUES (1, '2026-01-01 00:00:00', 'plate', 'promote', 'mallory')": "append-only",
        "INSERT INTO audit_log (id, at, experiment, action, actor) VALUES "
        "(1, '2026-01-01 00:00:00', 'plate', 'promote', 'x') ON CONFLICT(id) DO UPDATE "
        "SET actor = 'mallory'": "append-only",
        "UPDATE audit_log SET actor = 'mallory'": "append-only",
        "DELETE FROM audit_log": "append-only",
        "DROP TABLE audit_log": "not authorized",
        "ALTER TABLE audit_log RENAME TO audit_log_old": "not authorized",
        "DROP TRIGGER audit_log_no_replace": "not authorized",
        "PRAGMA writable_schema = ON": "not authorized",
    }
    for statement, message in refused.items():
        with pytest.raises(sa.exc.DatabaseError, match=message), engine.begin() as db:
            db.execute(sa.text(statement))
    # the triggers live in the database: another client is refused the same rewrites
    outside = attacker(platform_paths)
    for statement in list(refused)[:4]:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            outside.execute(statement)
    assert len(decided.catalog.audit_chain(EXPERIMENT)) == 6


def test_verify_names_an_entry_replaced_through_sql(decided, platform_paths, capsys):
    outside = attacker(platform_paths)
    outside.execute("DROP TRIGGER audit_log_no_replace")  # what only the file's owner can do
    row = outside.execute("SELECT * FROM audit_log WHERE id = 3").fetchone()
    columns = [c[1] for c in outside.execute("PRAGMA table_info(audit_log)")]
    forged = dict(zip(columns, row, strict=True)) | {"reasons": json.dumps(["looked fine"])}
    outside.execute(f"INSERT OR REPLACE INTO audit_log ({', '.join(forged)}) "
                    f"VALUES ({', '.join('?' * len(forged))})", list(forged.values()))
    status, out = verify(platform_paths, capsys)
    assert status == 1 and "plate: FAILED" in out
    assert "entry #3: its content hashes to" in out and "changed after it was written" in out


def test_verify_detects_a_consistently_rehashed_forgery_by_the_recorded_head(
        decided, platform_paths, capsys):
    from heat_platform.data import audit_chain

    outside = attacker(platform_paths)
    outside.execute("DROP TRIGGER audit_log_no_update")
    previous = audit_chain.GENESIS
    for entry in decided.catalog.audit_chain(EXPERIMENT):  # rewrite every hash consistently
        forged = {**{name: getattr(entry, name) for name in audit_chain.HASHED},
                  "actor": "mallory", "prev_hash": previous}
        previous = audit_chain.entry_hash(forged)
        outside.execute("UPDATE audit_log SET actor = 'mallory', prev_hash = ?, entry_hash = ? "
                        "WHERE id = ?", (forged["prev_hash"], previous, entry.id))
    status, out = verify(platform_paths, capsys)
    assert status == 1 and "the log was rewritten" in out and "entry #" not in out


def test_verify_fails_after_the_table_is_dropped_and_recreated(decided, platform_paths, capsys):
    attacker(platform_paths).execute("DROP TABLE audit_log")
    assert Catalog(platform_paths.catalog_url).audit_chain(EXPERIMENT) == []  # recreated empty
    status, out = verify(platform_paths, capsys)
    assert status == 1
    assert "the log has 0 entries but the head recorded on heat-model-plate" in out
    assert "dropped and recreated" in out


def test_verify_names_where_an_entry_was_deleted(decided, platform_paths, capsys):
    outside = attacker(platform_paths)
    outside.execute("DROP TRIGGER audit_log_no_delete")
    outside.execute("DELETE FROM audit_log WHERE id = 3")  # the rejection, mid-chain
    status, out = verify(platform_paths, capsys)
    assert status == 1
    assert "entry #4: its previous hash" in out and "not the hash of #2" in out

    # (opening the catalog recreated the dropped trigger: drop it again)
    outside.execute("DROP TRIGGER audit_log_no_delete")
    outside.execute("DELETE FROM audit_log WHERE id >= 4")  # the chain now ends intact...
    status, out = verify(platform_paths, capsys)
    assert status == 1  # ...but shorter than the registry says it is
    assert "the log has 2 entries but the head recorded" in out


def test_rollback_goes_only_to_a_former_champion_from_the_log(decided, tmp_path):
    register(decided.tracking, tmp_path)  # v4: never judged, never champion, not rejected
    with pytest.raises(RegistryError, match=r"v4 was never champion \(the audit log's "
                                            r"champions: v1, v3\)"):
        decided.rollback(EXPERIMENT, "4", actor="bob")
    with pytest.raises(RegistryError, match="v2 was never champion"):
        decided.rollback(EXPERIMENT, "2", actor="bob")
    # a tag anybody can set does not make a champion: only the log does
    decided.client.set_registered_model_alias(registered_model_name(EXPERIMENT), "previous", "4")
    with pytest.raises(RegistryError, match="never champion"):
        decided.rollback(EXPERIMENT, "4", actor="bob")
    entry = decided.rollback(EXPERIMENT, actor="bob")  # default: the champion before v3
    assert (entry.action, entry.phase, entry.from_version, entry.to_version) == (
        "rollback", "confirmed", "3", "1")
    assert decided.champion(EXPERIMENT).version == "1"
    assert decided.rollback(EXPERIMENT, actor="bob").to_version == "3"  # and back


def test_an_interrupted_champion_move_is_detected_and_closed(decided, platform_paths, capsys,
                                                            monkeypatch, tmp_path):
    registry, name = decided, registered_model_name(EXPERIMENT)
    register(registry.tracking, tmp_path)  # v4
    registry.audit_log.stale_after = dt.timedelta(0)  # as if the crash was long ago

    # 1. the process stops after the intent, before the alias moves
    class Crash(BaseException):
        pass

    def crash(*args, **kwargs):
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(registry.client, "set_registered_model_alias", crash)
        with pytest.raises(Crash):
            registry.promote(EXPERIMENT, "4", actor="gate", reasons=["better"])
    assert registry.champion(EXPERIMENT).version == "3"
    check = registry.audit_log.verify(EXPERIMENT)
    assert not check.ok and any("was never confirmed or abandoned" in p for p in check.problems)
    # the next move closes it: the alias never moved, so the intent is abandoned
    registry.promote(EXPERIMENT, "4", actor="gate", reasons=["better"])
    abandoned = [e for e in registry.catalog.audit_chain(EXPERIMENT) if e.phase == "abandoned"]
    assert len(abandoned) == 1 and "never happened" in abandoned[0].reasons[0]
    assert registry.audit_log.verify(EXPERIMENT).ok

    # 2. the process stops after the alias moved, before the confirmation
    record = registry.audit_log.record

    def record_until_confirmation(*args, **kwargs):
        if kwargs.get("phase") == "confirmed":
            raise Crash
        return record(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(registry.audit_log, "record", record_until_confirmation)
        with pytest.raises(Crash):
            registry.rollback(EXPERIMENT, "3", actor="bob")
    assert registry.champion(EXPERIMENT).version == "3"  # moved, but not confirmed
    status, out = verify(platform_paths, capsys)  # (the CLI's registry: default staleness)
    assert status == 0 and "a move in progress?" in out  # a fresh intent may be in flight
    check = registry.audit_log.verify(EXPERIMENT)
    assert not check.ok and any("never confirmed" in p for p in check.problems)
    (confirmed,) = registry.reconcile(EXPERIMENT)  # what `audit --repair` does
    assert (confirmed.action, confirmed.phase, confirmed.actor) == ("rollback", "confirmed",
                                                                     "recovery")
    assert "happened" in confirmed.reasons[0]
    assert registry.audit_log.verify(EXPERIMENT).ok
    assert registry.former_champions(EXPERIMENT) == ["1", "3", "4"]
    assert str(registry.client.get_model_version_by_alias(name, "previous").version) == "4"


def test_a_champion_moved_outside_the_platform_is_reported(decided, platform_paths, capsys):
    decided.client.set_registered_model_alias(registered_model_name(EXPERIMENT), "champion", "1")
    status, out = verify(platform_paths, capsys)
    assert status == 1 and "the champion alias is v1 but the log's last completed move is to v3" \
        in out
    with pytest.raises(RegistryError, match="the audit log's last move is to v3"):
        decided.rollback(EXPERIMENT, actor="bob")


def test_a_catalog_from_before_the_chain_opens_and_its_entries_are_covered(tmp_path):
    from heat_platform.data import audit_chain

    path = tmp_path / "platform.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript("""
        CREATE TABLE audit_log (id INTEGER NOT NULL PRIMARY KEY, at DATETIME NOT NULL,
            experiment VARCHAR(64) NOT NULL, action VARCHAR(16) NOT NULL,
            actor VARCHAR(128) NOT NULL, model_name VARCHAR(128), from_version VARCHAR(32),
            to_version VARCHAR(32), reasons TEXT, dagster_run_id VARCHAR(64));
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        INSERT INTO audit_log (at, experiment, action, actor, to_version, reasons) VALUES
            ('2026-01-01 10:00:00.000000', 'plate', 'promote', 'gate', '1', '["first"]'),
            ('2026-01-02 10:00:00.000000', 'plate', 'reject', 'gate', '2', '["worse"]');
    """)
    catalog = Catalog(path)
    legacy = audit_chain.verify(EXPERIMENT, catalog.audit_chain(EXPERIMENT))
    assert legacy.ok and legacy.legacy == [1, 2]
    catalog.audit(EXPERIMENT, "pending", actor="gate", reasons=["waits"], to_version="3")
    chain = catalog.audit_chain(EXPERIMENT)
    assert chain[2].prev_hash == legacy.head.hash  # the legacy entries are anchored
    assert audit_chain.verify(EXPERIMENT, chain).ok
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the new trigger is there
        old.execute("INSERT OR REPLACE INTO audit_log (id, at, experiment, action, actor) "
                    "VALUES (1, '2026-01-01', 'plate', 'promote', 'mallory')")
    old.execute("DROP TRIGGER audit_log_no_update")
    old.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 1")
    (problem,) = audit_chain.verify(EXPERIMENT, catalog.audit_chain(EXPERIMENT)).breaks
    assert problem.entry_id == 3 and "not the hash of #2" in problem.problem
