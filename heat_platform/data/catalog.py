"""The catalog: which version of which batch the platform holds, and what validation said.

SQLAlchemy Core, one ``Table`` per concept on the module's :data:`metadata`; SQLite by default
(``PlatformPaths.catalog_url``), PostgreSQL (``HEAT_PLATFORM_DB_URL``) with the same code. To
add a table (audit log, deployments...), declare it next to :data:`batch_versions` on
:data:`metadata`, add a frozen dataclass for its rows and a few methods on :class:`Catalog`;
``create_all`` creates it in existing databases on the next start.

``batch_versions`` has one row per distinct content (sha256) of a batch: a file rewritten in
the landing zone adds a row, and old rows are never deleted, so every version stays
retrievable (its blob is in the content store). The *current* version of a batch is the one
ingested most recently (``ingest_seq``): re-dropping an older file makes that version current
again without duplicating it.

Several processes (sensor, run workers, the webserver) use the catalog at once. On SQLite
each connection runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue instead of failing with "database is locked". On
PostgreSQL (several pods on Kubernetes) write transactions take one transaction-level advisory
lock first, so they queue the same way: ``record_ingestion`` reads the largest ``ingest_seq``
and writes the next one, which two concurrent READ COMMITTED transactions would both take.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

Status = Literal["ingested", "validated", "rejected"]
STATUSES: tuple[str, ...] = ("ingested", "validated", "rejected")
SQLITE_BUSY_TIMEOUT_MS = 30_000

metadata = sa.MetaData()

batch_versions = sa.Table(
    "batch_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), nullable=False),
    sa.Column("batch", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("source_path", sa.Text, nullable=False),
    sa.Column("blob_path", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    # ingested_at: when this content was first ingested; ingest_seq orders "became current".
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ingest_seq", sa.BigInteger, nullable=False),
    sa.Column("ingest_run_id", sa.String(64)),
    sa.Column("n_rows", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False, server_default="ingested"),
    sa.Column("n_valid", sa.BigInteger),
    sa.Column("n_quarantined", sa.BigInteger),
    sa.Column("validated_path", sa.Text),
    sa.Column("quarantine_path", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("validated_at", sa.DateTime(timezone=True)),
    sa.Column("validation_run_id", sa.String(64)),
    sa.UniqueConstraint("experiment", "batch", "sha256", name="uq_batch_versions_content"),
    sa.CheckConstraint(f"status IN {STATUSES}", name="ck_batch_versions_status"),
    sa.Index("ix_batch_versions_current", "experiment", "batch", "ingest_seq"),
)

problem_specs = sa.Table(
    "problem_specs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),  # of the file's bytes
    sa.Column("spec_sha256", sa.String(64)),  # of the parsed spec (layout-independent)
    sa.Column("blob_path", sa.Text, nullable=False),
    sa.Column("valid", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_problem_specs_current", "experiment", "id"),
)

# What the landing-zone sensor observed of each landing file (size, mtime, sha256) and which
# content it announced for ingestion. Kept here, not in the sensor's cursor: Dagster stores the
# cursor in every tick's record, so a cursor holding one entry per file (megabytes for 10,000
# files) would be written again every ten seconds. The cursor holds a generation number: an
# announcement made by the tick of generation g counts once a cursor >= g was stored, i.e. once
# Dagster recorded that tick together with its run requests; until then ``announced`` keeps the
# previous announcement, so a tick lost in a crash is simply announced again.
landing_observations = sa.Table(
    "landing_observations",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),  # "spec" or "batch"
    sa.Column("key", sa.String(320), primary_key=True),  # <experiment>|<batch>
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64)),  # cached for (size, mtime_ns)
    sa.Column("announced", sa.String(64)),  # announced by a tick known to be recorded
    sa.Column("announcing", sa.String(64)),  # announced by the tick of `generation`
    sa.Column("generation", sa.BigInteger),
)

# A drift episode that triggered retraining starts a new regime: the material changed, so
# training sets use only batches ingested from the drifted one on (ingest_seq >= since_seq).
regimes = sa.Table(
    "regimes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), nullable=False),
    sa.Column("since_seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_regimes_experiment", "experiment", "id"),
)

# Every model decision (promote, reject, pending, approve, rollback, deploy), append-only and
# tamper-evident: the database itself refuses UPDATE and DELETE on it (triggers on SQLite; on
# PostgreSQL triggers that also refuse TRUNCATE), and on SQLite also an INSERT OR REPLACE (or upsert) of an existing id, which
# would otherwise rewrite an entry without firing either trigger. The platform's own SQLite
# connections refuse DROP and ALTER of the table and its triggers (an authorizer, see
# _configure_sqlite: SQLite has no DROP trigger); another client with write access to the file
# can still drop or edit it, which the hash chain (heat_platform.data.audit_chain) and the head
# recorded outside the table (heat_platform.models.audit_log) then show. A move of the champion
# alias is an ``intent`` entry before the move and a ``confirmed`` one after it (``abandoned``
# when a crash stopped it before the move); other decisions have no phase.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("experiment", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("model_name", sa.String(128)),
    sa.Column("from_version", sa.String(32)),
    sa.Column("to_version", sa.String(32)),
    sa.Column("reasons", sa.Text),  # JSON list of strings
    sa.Column("dagster_run_id", sa.String(64)),
    # (added with the hash chain: nullable, so catalogs from before it open unchanged)
    sa.Column("phase", sa.String(16)),  # intent | confirmed | abandoned (alias moves only)
    sa.Column("intent_id", sa.Integer),  # the intent a confirmed/abandoned entry closes
    sa.Column("prev_hash", sa.String(64)),
    sa.Column("entry_hash", sa.String(64)),
    sa.Index("ix_audit_log_experiment", "experiment", "id"),
)
AUDIT_ACTIONS = ("promote", "reject", "pending", "approve", "rollback", "deploy")
AUDIT_PHASES = ("intent", "confirmed", "abandoned")
CHAMPION_MOVES = ("promote", "approve", "rollback")  # the decisions that move the alias

SQLITE_TRIGGERS = {
    **{f"audit_log_no_{statement.lower()}": (
        f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{statement.lower()} BEFORE {statement} "
        "ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
       for statement in ("UPDATE", "DELETE")},
    # REPLACE deletes the row it conflicts with, which fires no DELETE trigger (unless recursive
    # triggers are on): refuse any insert of an id that exists, whatever its conflict clause.
    "audit_log_no_replace": (
        "CREATE TRIGGER IF NOT EXISTS audit_log_no_replace BEFORE INSERT ON audit_log "
        "WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id) "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only (that entry exists)'); END"),
}
for _ddl in SQLITE_TRIGGERS.values():
    sa.event.listen(audit_log, "after_create", sa.DDL(_ddl).execute_if(dialect="sqlite"))
# A trigger, not a rule: a rule "DO INSTEAD NOTHING" would let the statement succeed silently.
for _ddl in (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    # (%% is a literal % in SQLAlchemy DDL: plpgsql then puts the refused operation there.)
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only (%% refused)', TG_OP; END $$",
    "CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
):
    sa.event.listen(audit_log, "after_create", sa.DDL(_ddl).execute_if(dialect="postgresql"))

# On PostgreSQL the platform should not own its catalog: an owner (or a superuser) can DROP,
# ALTER or TRUNCATE audit_log and disable its triggers, and no trigger can refuse that. So an
# administrator creates the tables as their owner and the platform connects as a role that may
# only do what it needs (Catalog.grant_platform_role, `heat-platform catalog-grant`): read and
# write the other tables, only read and append to audit_log.
AUDIT_LOG_GRANTS = ("SELECT", "INSERT")
TABLE_GRANTS = ("SELECT", "INSERT", "UPDATE", "DELETE")

# Any constant: the key of the advisory lock that serialises the catalog's PostgreSQL writers.
POSTGRES_WRITE_LOCK = 0x6865617463617400  # "heatcat"


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log (its hash chain: heat_platform.data.audit_chain)."""

    id: int
    at: dt.datetime
    experiment: str
    action: str
    actor: str
    model_name: str | None
    from_version: str | None
    to_version: str | None
    reasons: list[str]
    dagster_run_id: str | None
    phase: str | None = None
    intent_id: int | None = None
    prev_hash: str | None = None  # None: written before the hash chain existed (legacy)
    entry_hash: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        import json

        values = {f.name: row[f.name] for f in fields(cls)}
        values["at"] = _utc(values["at"])
        values["reasons"] = json.loads(values["reasons"] or "[]")
        return cls(**values)


@dataclass(frozen=True)
class SpecVersion:
    """One ingested problem.yaml: valid ones are what validation and training use."""

    id: int
    experiment: str
    sha256: str
    spec_sha256: str | None
    blob_path: str
    valid: bool
    message: str | None
    recorded_at: dt.datetime
    run_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SpecVersion:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["recorded_at"] = _utc(values["recorded_at"])
        return cls(**values)


@dataclass(frozen=True)
class BatchVersion:
    """One row of ``batch_versions``."""

    id: int
    experiment: str
    batch: str
    sha256: str
    source_path: str
    blob_path: str
    size_bytes: int
    ingested_at: dt.datetime
    last_ingested_at: dt.datetime
    ingest_seq: int
    ingest_run_id: str | None
    n_rows: int | None
    status: Status
    n_valid: int | None
    n_quarantined: int | None
    validated_path: str | None
    quarantine_path: str | None
    message: str | None
    validated_at: dt.datetime | None
    validation_run_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BatchVersion:
        values = {f.name: row[f.name] for f in fields(cls)}
        for name in ("ingested_at", "last_ingested_at", "validated_at"):
            values[name] = _utc(values[name])
        return cls(**values)


@dataclass(frozen=True)
class Exclusion:
    version: BatchVersion
    reason: str


@dataclass(frozen=True)
class ValidatedBatches:
    """The training set's input: current versions that passed validation, and the batches left
    out with the reason (so a rejected re-upload is visible, not silently papered over)."""

    included: list[BatchVersion]
    excluded: list[Exclusion]


class Catalog:
    def __init__(self, url: str | Path, *, echo: bool = False) -> None:
        url = str(url)
        if "://" not in url:
            url = f"sqlite:///{url}"
        self.url = url
        if url.startswith("sqlite"):
            # No pooled connections: a SQLite connection open at fork() time and closed in the
            # child (Dagster's run workers, multiprocessing) can make the child checkpoint and
            # remove the WAL under the parent, losing committed rows (seen in our tests).
            # Opening a SQLite connection per operation costs well under a millisecond.
            self.engine: Engine = sa.create_engine(url, echo=echo, poolclass=sa.pool.NullPool)
            _configure_sqlite(self.engine)
        else:
            self.engine = sa.create_engine(url, echo=echo, pool_pre_ping=True)
        metadata.create_all(self.engine)
        _upgrade_audit_log(self.engine)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction: on SQLite BEGIN IMMEDIATE (see :func:`_configure_sqlite`), on
        PostgreSQL after the catalog's advisory lock; either way writers queue."""
        with self.engine.connect() as connection:
            connection.execution_options(write_transaction=True)
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(
                        POSTGRES_WRITE_LOCK)))
                yield connection

    def grant_platform_role(self, role: str) -> list[str]:
        """PostgreSQL: let ``role`` (which must exist and must not own the tables) run the
        platform on this catalog and nothing more; returns the statements run. Run as the
        tables' owner. The role may append to the audit log but not UPDATE, DELETE, TRUNCATE,
        DROP or ALTER it (nor disable its triggers, which takes ownership)."""
        if self.engine.dialect.name != "postgresql":
            raise ValueError("an insert-only role is a PostgreSQL feature; on SQLite the "
                             "platform's connections refuse DROP and ALTER of the audit log")
        quote = self.engine.dialect.identifier_preparer.quote
        with self.engine.connect() as db:
            schema = db.execute(sa.select(sa.func.current_schema())).scalar_one()
            owners = set(db.execute(sa.text(
                "SELECT tableowner FROM pg_tables WHERE schemaname = :schema "
                "AND tablename = ANY(:tables)"),
                {"schema": schema, "tables": list(metadata.tables)}).scalars())
        if role in owners:
            raise ValueError(f"role {role!r} owns the catalog's tables, so it could drop the "
                             "audit log: create the tables as another role and grant this one")
        who, where = quote(role), quote(schema)
        statements = [f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}",
                      f"GRANT USAGE ON SCHEMA {where} TO {who}"]
        for table in metadata.sorted_tables:
            grants = AUDIT_LOG_GRANTS if table is audit_log else TABLE_GRANTS
            statements.append(f"GRANT {', '.join(grants)} ON {quote(table.name)} TO {who}")
        # the id sequences (nextval needs USAGE); no UPDATE, so setval is refused
        statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {who}")
        with self.engine.begin() as db:
            for statement in statements:
                db.execute(sa.text(statement))
        return statements

    # -- writes --

    def record_ingestion(
        self,
        experiment: str,
        batch: str,
        *,
        sha256: str,
        source_path: str | Path,
        blob_path: str | Path,
        size_bytes: int,
        run_id: str | None = None,
        n_rows: int | None = None,
        now: dt.datetime | None = None,
    ) -> BatchVersion:
        """Record that this content of the batch is now in the store and is its current
        version. Idempotent for the current version; an older version dropped again becomes
        current again (its row is reused, ``ingested_at`` keeps the first time)."""
        now = _utc(now) or _now()
        table = batch_versions
        where = (table.c.experiment == experiment) & (table.c.batch == batch)
        with self._transaction() as db:
            latest = db.execute(
                sa.select(table.c.sha256, table.c.ingest_seq)
                .where(where)
                .order_by(table.c.ingest_seq.desc(), table.c.id.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.sha256 == sha256:
                return self._get(db, experiment, batch, sha256)
            seq = (
                db.execute(
                    sa.select(sa.func.coalesce(sa.func.max(table.c.ingest_seq), 0))
                ).scalar_one()
                + 1
            )
            existing = db.execute(
                sa.select(table.c.id).where(where & (table.c.sha256 == sha256))
            ).first()
            if existing is None:
                db.execute(
                    table.insert().values(
                        experiment=experiment,
                        batch=batch,
                        sha256=sha256,
                        source_path=str(source_path),
                        blob_path=str(blob_path),
                        size_bytes=int(size_bytes),
                        ingested_at=now,
                        last_ingested_at=now,
                        ingest_seq=seq,
                        ingest_run_id=run_id,
                        n_rows=n_rows,
                        status="ingested",
                    )
                )
            else:
                db.execute(
                    table.update()
                    .where(table.c.id == existing.id)
                    .values(
                        last_ingested_at=now,
                        ingest_seq=seq,
                        ingest_run_id=run_id,
                        source_path=str(source_path),
                    )
                )
            return self._get(db, experiment, batch, sha256)

    def record_validation(
        self,
        experiment: str,
        batch: str,
        *,
        sha256: str,
        status: Status,
        n_rows: int | None = None,
        n_valid: int | None = None,
        n_quarantined: int | None = None,
        validated_path: str | Path | None = None,
        quarantine_path: str | Path | None = None,
        message: str | None = None,
        run_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> BatchVersion:
        """Record the outcome of validating one version (``validated`` or ``rejected``)."""
        if status not in ("validated", "rejected"):
            raise ValueError(f"validation status must be 'validated' or 'rejected', not {status!r}")
        table = batch_versions
        values: dict[str, Any] = {
            "status": status,
            "n_valid": n_valid,
            "n_quarantined": n_quarantined,
            "validated_path": str(validated_path) if validated_path is not None else None,
            "quarantine_path": str(quarantine_path) if quarantine_path is not None else None,
            "message": message,
            "validated_at": _utc(now) or _now(),
            "validation_run_id": run_id,
        }
        if n_rows is not None:
            values["n_rows"] = n_rows
        with self._transaction() as db:
            updated = db.execute(
                table.update()
                .where(
                    (table.c.experiment == experiment)
                    & (table.c.batch == batch)
                    & (table.c.sha256 == sha256)
                )
                .values(**values)
            )
            if updated.rowcount != 1:
                raise LookupError(
                    f"no ingested version {sha256[:12]} of batch {batch!r} in {experiment!r}"
                )
            return self._get(db, experiment, batch, sha256)

    # -- reads --

    def current_version(self, experiment: str, batch: str) -> BatchVersion | None:
        """The most recently ingested version of a batch, or None."""
        table = batch_versions
        with self.engine.connect() as db:
            row = (
                db.execute(
                    sa.select(table)
                    .where((table.c.experiment == experiment) & (table.c.batch == batch))
                    .order_by(table.c.ingest_seq.desc(), table.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return BatchVersion.from_row(row) if row else None

    def history(self, experiment: str, batch: str) -> list[BatchVersion]:
        """Every version of a batch, oldest first by first ingestion; the last one that became
        current is the one :meth:`current_version` returns."""
        table = batch_versions
        with self.engine.connect() as db:
            rows = (
                db.execute(
                    sa.select(table)
                    .where((table.c.experiment == experiment) & (table.c.batch == batch))
                    .order_by(table.c.ingested_at, table.c.id)
                )
                .mappings()
                .all()
            )
        return [BatchVersion.from_row(r) for r in rows]

    def current_versions(self, experiment: str) -> list[BatchVersion]:
        """The current version of every batch of an experiment, by batch name."""
        table = batch_versions
        ranked = (
            sa.select(
                table,
                sa.func.row_number()
                .over(
                    partition_by=table.c.batch,
                    order_by=(table.c.ingest_seq.desc(), table.c.id.desc()),
                )
                .label("rank"),
            )
            .where(table.c.experiment == experiment)
            .subquery()
        )
        with self.engine.connect() as db:
            rows = (
                db.execute(sa.select(ranked).where(ranked.c.rank == 1).order_by(ranked.c.batch))
                .mappings()
                .all()
            )
        return [BatchVersion.from_row(r) for r in rows]

    def validated_batches(self, experiment: str) -> ValidatedBatches:
        """Current versions with status 'validated'. A batch whose current version is rejected
        or not validated yet is excluded and listed, never replaced by an older valid
        version (the lab sent a new file for a reason)."""
        included: list[BatchVersion] = []
        excluded: list[Exclusion] = []
        for version in self.current_versions(experiment):
            if version.status == "validated":
                included.append(version)
            elif version.status == "rejected":
                excluded.append(
                    Exclusion(
                        version,
                        f"current version {version.sha256[:12]} was rejected: "
                        f"{version.message or 'no message'}",
                    )
                )
            else:
                excluded.append(
                    Exclusion(
                        version, f"current version {version.sha256[:12]} is not validated yet"
                    )
                )
        return ValidatedBatches(included, excluded)

    def record_spec(self, experiment: str, *, sha256: str, blob_path: str | Path, valid: bool,
                    spec_sha256: str | None = None, message: str | None = None,
                    run_id: str | None = None, now: dt.datetime | None = None) -> SpecVersion:
        """Append what ingesting an experiment's problem.yaml found (valid or not)."""
        with self._transaction() as db:
            inserted = db.execute(problem_specs.insert().values(
                experiment=experiment, sha256=sha256, spec_sha256=spec_sha256,
                blob_path=str(blob_path), valid=valid, message=message,
                recorded_at=_utc(now) or _now(), run_id=run_id,
            ))
            row = db.execute(sa.select(problem_specs).where(
                problem_specs.c.id == inserted.inserted_primary_key[0])).mappings().one()
        return SpecVersion.from_row(row)

    def latest_spec(self, experiment: str) -> SpecVersion | None:
        """The most recently ingested problem.yaml of an experiment, valid or not."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(problem_specs).where(problem_specs.c.experiment == experiment)
                .order_by(problem_specs.c.id.desc()).limit(1)
            ).mappings().first()
        return SpecVersion.from_row(row) if row else None

    def start_regime(self, experiment: str, since_seq: int, *, reason: str | None = None,
                     run_id: str | None = None) -> int:
        """Record that the experiment's data from ingest ``since_seq`` on is a new regime
        (idempotent when that regime is already the current one)."""
        if self.regime_start(experiment) == since_seq:
            return since_seq
        with self._transaction() as db:
            db.execute(regimes.insert().values(experiment=experiment, since_seq=int(since_seq),
                                               reason=reason, recorded_at=_now(), run_id=run_id))
        return since_seq

    def regime_start(self, experiment: str) -> int | None:
        """ingest_seq from which the current regime's batches count; None: all batches."""
        with self.engine.connect() as db:
            return db.execute(
                sa.select(regimes.c.since_seq).where(regimes.c.experiment == experiment)
                .order_by(regimes.c.id.desc()).limit(1)
            ).scalar()

    def landing_state(self, kind: str, generation: int) -> dict[str, dict[str, Any]]:
        """The sensor's observations of ``kind`` ("spec" or "batch") files, as of the recorded
        cursor ``generation``: ``{key: {size, mtime_ns, sha256, announced}}``."""
        table = landing_observations
        with self.engine.connect() as db:
            rows = db.execute(sa.select(table).where(table.c.kind == kind)).mappings().all()
        return {row["key"]: {
            "size": row["size"], "mtime_ns": row["mtime_ns"], "sha256": row["sha256"],
            "announced": row["announcing"] if row["generation"] is not None
            and row["generation"] <= generation else row["announced"],
        } for row in rows}

    def save_landing_state(self, kind: str, before: Mapping[str, Mapping[str, Any]],
                           after: Mapping[str, Mapping[str, Any]], generation: int) -> None:
        """Write what changed from ``before`` (as :meth:`landing_state` returned it) to
        ``after``: new announcements belong to ``generation`` (the cursor the tick returns)."""
        table = landing_observations
        changed = [key for key, entry in after.items() if before.get(key) != entry]
        gone = [key for key in before if key not in after]
        if not changed and not gone:
            return
        with self._transaction() as db:
            for keys in _chunks(gone + changed, 500):
                db.execute(table.delete().where((table.c.kind == kind) & table.c.key.in_(keys)))
            if changed:
                db.execute(table.insert(), [self._landing_row(kind, key, before.get(key),
                                                              after[key], generation)
                                            for key in changed])

    @staticmethod
    def _landing_row(kind: str, key: str, before: Mapping[str, Any] | None,
                     after: Mapping[str, Any], generation: int) -> dict[str, Any]:
        durable = before.get("announced") if before else None
        row = {"kind": kind, "key": key, "size": after["size"], "mtime_ns": after["mtime_ns"],
               "sha256": after["sha256"], "announced": durable, "announcing": None,
               "generation": None}
        if after.get("announced") != durable:
            row.update(announcing=after["announced"], generation=generation)
        return row

    def audit(self, experiment: str, action: str, *, actor: str, reasons: list[str],
              model_name: str | None = None, from_version: str | None = None,
              to_version: str | None = None, dagster_run_id: str | None = None,
              phase: str | None = None, intent_id: int | None = None) -> AuditEntry:
        """Append one decision to the audit log, chained to the experiment's previous entry.
        (Record decisions through :class:`heat_platform.models.audit_log.AuditLog`, which also
        records the chain's head outside this table.)"""
        import json

        from heat_platform.data import audit_chain

        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {action!r}; one of {AUDIT_ACTIONS}")
        if phase is not None and phase not in AUDIT_PHASES:
            raise ValueError(f"unknown audit phase {phase!r}; one of {AUDIT_PHASES}")
        values = {"at": _now(), "experiment": experiment, "action": action, "actor": actor,
                  "model_name": model_name, "from_version": from_version,
                  "to_version": to_version, "reasons": [str(r) for r in reasons],
                  "dagster_run_id": dagster_run_id, "phase": phase, "intent_id": intent_id}
        with self._transaction() as db:
            # appends to one chain cannot interleave: _transaction serialises the writers
            values["prev_hash"] = audit_chain.head_of(self._chain(db, experiment)).hash
            values["entry_hash"] = audit_chain.entry_hash(values)
            inserted = db.execute(audit_log.insert().values(
                {**values, "reasons": json.dumps(values["reasons"])}))
            row = db.execute(sa.select(audit_log).where(
                audit_log.c.id == inserted.inserted_primary_key[0])).mappings().one()
        return AuditEntry.from_row(row)

    def audit_trail(self, experiment: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if experiment is not None:
            query = query.where(audit_log.c.experiment == experiment)
        with self.engine.connect() as db:
            return [AuditEntry.from_row(r) for r in db.execute(query).mappings().all()]

    def audit_chain(self, experiment: str) -> list[AuditEntry]:
        """Every entry of an experiment, oldest first: its hash chain."""
        with self.engine.connect() as db:
            return self._chain(db, experiment)

    def audited_experiments(self) -> list[str]:
        """The experiments the audit log has entries of."""
        with self.engine.connect() as db:
            return list(db.execute(sa.select(audit_log.c.experiment).distinct()
                                   .order_by(audit_log.c.experiment)).scalars())

    @staticmethod
    def _chain(db: Connection, experiment: str) -> list[AuditEntry]:
        rows = db.execute(sa.select(audit_log).where(audit_log.c.experiment == experiment)
                          .order_by(audit_log.c.id)).mappings().all()
        return [AuditEntry.from_row(r) for r in rows]

    def batch_version(self, experiment: str, batch: str, sha256: str) -> BatchVersion | None:
        """One version of a batch by its content hash, or None."""
        with self.engine.connect() as db:
            try:
                return self._get(db, experiment, batch, sha256)
            except sa.exc.NoResultFound:
                return None

    def spec_current_at(self, experiment: str, at: dt.datetime) -> SpecVersion | None:
        """The valid problem.yaml of an experiment that was the newest at time ``at``."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(problem_specs).where((problem_specs.c.experiment == experiment)
                                               & problem_specs.c.valid
                                               & (problem_specs.c.recorded_at <= at))
                .order_by(problem_specs.c.id.desc()).limit(1)).mappings().first()
        return SpecVersion.from_row(row) if row else None

    def spec_version(self, experiment: str, sha256: str) -> SpecVersion | None:
        """The newest record of an experiment's problem.yaml with these bytes, or None."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(problem_specs).where((problem_specs.c.experiment == experiment)
                                               & (problem_specs.c.sha256 == sha256))
                .order_by(problem_specs.c.id.desc()).limit(1)).mappings().first()
        return SpecVersion.from_row(row) if row else None

    def experiments(self) -> list[str]:
        with self.engine.connect() as db:
            return list(
                db.execute(
                    sa.select(batch_versions.c.experiment)
                    .distinct()
                    .order_by(batch_versions.c.experiment)
                ).scalars()
            )

    def _get(self, db: Connection, experiment: str, batch: str, sha256: str) -> BatchVersion:
        table = batch_versions
        row = (
            db.execute(
                sa.select(table).where(
                    (table.c.experiment == experiment)
                    & (table.c.batch == batch)
                    & (table.c.sha256 == sha256)
                )
            )
            .mappings()
            .one()
        )
        return BatchVersion.from_row(row)


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers do not block the writer), a busy timeout, full fsync on commit (nothing
    recorded may be lost), and BEGIN IMMEDIATE for write transactions so a read-then-write
    takes the write lock up front instead of failing when another writer got there first."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()
        dbapi_connection.set_authorizer(_protect_audit_log)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("write_transaction", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _upgrade_audit_log(engine: Engine) -> None:
    """Bring an audit log created before the hash chain up to date: its new (nullable) columns,
    and on SQLite the triggers (``create_all`` creates neither in an existing table)."""

    def missing(db: Connection) -> list[str]:
        present = {c["name"] for c in sa.inspect(db).get_columns("audit_log")}
        return [name for name in ("phase", "intent_id", "prev_hash", "entry_hash")
                if name not in present]

    def triggers_missing(db: Connection) -> list[str]:
        if db.dialect.name != "sqlite":
            return []
        present = set(db.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
        )).scalars())
        return [ddl for name, ddl in SQLITE_TRIGGERS.items() if name not in present]

    with engine.connect() as db:
        if not missing(db) and not triggers_missing(db):
            return
    with engine.connect() as db:
        if db.dialect.name == "sqlite":  # the one ALTER of the audit log the platform makes
            db.connection.driver_connection.set_authorizer(None)
        db.execution_options(write_transaction=True)
        with db.begin():
            for column in missing(db):  # (again: another process may have just done it)
                kind = audit_log.c[column].type.compile(dialect=engine.dialect)
                db.execute(sa.text(f"ALTER TABLE audit_log ADD COLUMN {column} {kind}"))
            for ddl in triggers_missing(db):
                db.execute(sa.text(ddl))


def _protect_audit_log(action: int, first: str | None, second: str | None, _database: str | None,
                       _source: str | None) -> int:
    """SQLite authorizer of the platform's connections: no DROP or ALTER of the audit log, no
    DROP of its triggers, no writable schema (SQLite has no trigger that could refuse these)."""
    import sqlite3

    refused = (
        (action == sqlite3.SQLITE_DROP_TABLE and first == "audit_log")
        or (action == sqlite3.SQLITE_ALTER_TABLE and second == "audit_log")
        or (action == sqlite3.SQLITE_DROP_TRIGGER and second == "audit_log")
        or (action == sqlite3.SQLITE_PRAGMA and (first or "").lower() == "writable_schema"
            and second is not None)
    )
    return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands datetimes back naive; everything stored here is UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
