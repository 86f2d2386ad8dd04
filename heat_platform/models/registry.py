"""Which model version serves: MLflow registered-model aliases, and the audit log of decisions.

Aliases of an experiment's registered model: ``champion`` (what is served), ``previous`` (the
champion before it) and ``challenger`` (the newest trained version). Tags on versions:
``rejected`` (the gate's reasons) and ``pending_approval``. Every decision is appended to the
platform's tamper-evident audit log (:mod:`heat_platform.models.audit_log`) with time, actor,
versions and reasons; a move of the champion is written as an intent before the alias moves and
confirmed after, and a rollback goes only to a version the audit log shows was champion before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from heat_platform.data.catalog import AuditEntry, Catalog
from heat_platform.files import file_digest
from heat_platform.models.audit_log import AuditLog
from heat_platform.models.candidates import Champion
from heat_platform.models.mlflow_store import MlflowStore
from heat_platform.models.tracking import FILE_TAG, KIND_TAG, SHA256_TAG
from heat_platform.names import (
    CHAMPION,
    JUDGED,
    PENDING,
    PREVIOUS,
    REJECTED,
    registered_model_name,
)


class RegistryError(ValueError):
    """A requested promotion, approval or rollback that must not happen; says why."""


class ArtifactMismatch(RegistryError):
    """A registered model's stored file is missing or not the file that was registered."""


@dataclass(frozen=True)
class Version:
    model_name: str
    version: str
    run_id: str
    tags: dict[str, str]

    @property
    def rejected(self) -> bool:
        return REJECTED in self.tags

    @property
    def pending(self) -> bool:
        return self.tags.get(PENDING) == "true"

    @property
    def data_version(self) -> str:
        return self.tags.get("data_version", "")

    @property
    def kind(self) -> str:
        return self.tags.get(KIND_TAG, "pinn")


class ModelRegistry:
    def __init__(self, tracking: MlflowStore, catalog: Catalog) -> None:
        self.tracking, self.catalog = tracking, catalog
        self.client = tracking.client()
        self.audit_log = AuditLog(catalog, self.client)

    # -- reading --

    def version(self, experiment: str, version: str | int) -> Version | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version(registered_model_name(experiment), str(version))
        except MlflowException:
            return None
        return Version(found.name, str(found.version), found.run_id, dict(found.tags))

    def alias(self, experiment: str, alias: str) -> Version | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(registered_model_name(experiment), alias)
        except MlflowException:
            return None
        return Version(found.name, str(found.version), found.run_id, dict(found.tags))

    def judged(self, experiment: str, version: str) -> bool:
        """Has a gate judged this version already?"""
        found = self.version(experiment, version)
        return found is not None and JUDGED in found.tags

    def mark_judged(self, experiment: str, version: str, dagster_run_id: str) -> None:
        self.client.set_model_version_tag(registered_model_name(experiment), version, JUDGED,
                                          dagster_run_id)

    def champion(self, experiment: str) -> Version | None:
        return self.alias(experiment, CHAMPION)

    def download(self, version: Version, directory: Path) -> Path:
        """The version's TorchScript file (as logged by :func:`.tracking.register_model`),
        checked against the sha256 recorded at registration: a file changed in the artifact
        store since is refused (:class:`ArtifactMismatch`), never loaded."""
        mlflow = self.tracking.mlflow()
        local = Path(mlflow.artifacts.download_artifacts(
            f"models:/{version.model_name}/{version.version}", dst_path=str(directory)))
        path = local / version.tags.get(FILE_TAG, "model.pt")
        expected = version.tags.get(SHA256_TAG)
        if not path.is_file() or expected is None:
            raise ArtifactMismatch(f"{version.model_name} v{version.version} has no registered "
                                   f"model file with a recorded sha256")
        actual = file_digest(path)
        if actual != expected:
            raise ArtifactMismatch(
                f"{version.model_name} v{version.version}: the stored model file's sha256 is "
                f"{actual}, registered {expected}; refusing to load it")
        return path

    def current_champion(self, experiment: str, models_dir: Path) -> Champion | None:
        """The experiment's champion with its TorchScript file (under ``models_dir``), its
        lineage and its experiment's domain; None when it has none."""
        from heat_platform.data.ingest import current_spec

        champion = self.champion(experiment)
        if champion is None:
            return None
        artifact = self.download(champion, models_dir / experiment / f"champion-v{champion.version}")
        _, spec = current_spec(self.catalog, experiment)
        return Champion(experiment=experiment, model_name=champion.model_name,
                        version=champion.version, run_id=champion.run_id,
                        data_version=champion.data_version,
                        training_dagster_run_id=champion.tags.get("dagster_run_id", ""),
                        artifact=artifact,
                        domain={k: list(v) for k, v in spec.domain.bounds().items()},
                        kind=champion.kind)

    # -- decisions --

    def promote(self, experiment: str, version: str, *, actor: str, reasons: list[str],
                dagster_run_id: str | None = None, action: str = "promote") -> AuditEntry:
        """champion -> ``version``; the old champion becomes ``previous``. Audit-logged as an
        intent before the alias moves and confirmed after it (an earlier move a crash left
        half done is closed first); returns the confirmation."""
        target = self._existing(experiment, version)
        if target.rejected:
            raise RegistryError(f"{target.model_name} v{version} was rejected by the gate "
                                f"({target.tags[REJECTED]}); it cannot become champion")
        self.reconcile(experiment)
        old = self.champion(experiment)
        name = target.model_name
        move = {"actor": actor, "reasons": reasons, "model_name": name,
                "from_version": old.version if old else None, "to_version": target.version,
                "dagster_run_id": dagster_run_id}
        intent = self.audit_log.record(experiment, action, phase="intent", **move)
        if old is not None and old.version != target.version:
            self.client.set_registered_model_alias(name, PREVIOUS, old.version)
        self.client.set_registered_model_alias(name, CHAMPION, target.version)
        if target.pending:
            self.client.delete_model_version_tag(name, target.version, PENDING)
        return self.audit_log.record(experiment, action, phase="confirmed", intent_id=intent.id,
                                     **move)

    def reconcile(self, experiment: str, *, stale_only: bool = True) -> list[AuditEntry]:
        """Close champion moves a crash left between intent and confirmation (see
        :meth:`AuditLog.reconcile`); returns the entries written."""
        champion = self.champion(experiment)
        return self.audit_log.reconcile(experiment, champion.version if champion else None,
                                        stale_only=stale_only)

    def reject(self, experiment: str, version: str, *, actor: str, reasons: list[str],
               dagster_run_id: str | None = None) -> AuditEntry:
        target = self._existing(experiment, version)
        self.client.set_model_version_tag(target.model_name, target.version, REJECTED,
                                          json.dumps(reasons)[:5000])
        champion = self.champion(experiment)
        return self.audit_log.record(experiment, "reject", actor=actor, reasons=reasons,
                                     model_name=target.model_name,
                                     from_version=champion.version if champion else None,
                                     to_version=target.version, dagster_run_id=dagster_run_id)

    def mark_pending(self, experiment: str, version: str, *, actor: str, reasons: list[str],
                     dagster_run_id: str | None = None) -> AuditEntry:
        target = self._existing(experiment, version)
        self.client.set_model_version_tag(target.model_name, target.version, PENDING, "true")
        champion = self.champion(experiment)
        return self.audit_log.record(experiment, "pending", actor=actor, reasons=reasons,
                                     model_name=target.model_name,
                                     from_version=champion.version if champion else None,
                                     to_version=target.version, dagster_run_id=dagster_run_id)

    def record_deployment(self, experiment: str, version: str, bento: str, *, actor: str,
                          dagster_run_id: str | None = None) -> AuditEntry:
        """Audit-log that ``bento`` now serves ``version`` of the experiment's model."""
        return self.audit_log.record(experiment, "deploy", actor=actor,
                                     reasons=[f"bento {bento}"],
                                     model_name=registered_model_name(experiment),
                                     to_version=version, dagster_run_id=dagster_run_id)

    def approve(self, experiment: str, version: str, *, actor: str,
                dagster_run_id: str | None = None) -> AuditEntry:
        """Complete a promotion the gate left pending (approval mode)."""
        target = self._existing(experiment, version)
        if not target.pending:
            raise RegistryError(f"{target.model_name} v{version} is not waiting for approval")
        return self.promote(experiment, version, actor=actor, action="approve",
                            reasons=[f"approved by {actor}"], dagster_run_id=dagster_run_id)

    def former_champions(self, experiment: str) -> list[str]:
        """Every version the audit log shows became champion, in the order they did."""
        return list(dict.fromkeys(e.to_version for e in self.audit_log.champions(experiment)))

    def rollback(self, experiment: str, to_version: str | None = None, *, actor: str,
                 dagster_run_id: str | None = None) -> AuditEntry:
        """champion -> ``to_version`` (default: the champion before the current one). Only to
        a version the audit log (not a tag anybody can set) shows was champion before, and not
        to one the gate rejected since."""
        self.reconcile(experiment)
        champion = self.champion(experiment)
        moves = self.audit_log.champions(experiment)
        name = registered_model_name(experiment)
        if to_version is None:
            if champion is None or not moves:
                raise RegistryError(f"{experiment!r} has no previous champion to roll back to")
            if moves[-1].to_version != champion.version:
                raise RegistryError(
                    f"the champion alias of {name} is v{champion.version} but the audit log's "
                    f"last move is to v{moves[-1].to_version}; see `heat-platform audit --verify`")
            if moves[-1].from_version is None:
                raise RegistryError(f"{experiment!r} has no previous champion to roll back to")
            to_version = moves[-1].from_version
        target = self.version(experiment, to_version)
        if target is None:
            raise RegistryError(f"{name} has no version {to_version}")
        former = self.former_champions(experiment)
        if target.version not in former:
            listed = ", ".join(f"v{v}" for v in former) or "none"
            raise RegistryError(f"{name} v{to_version} was never champion (the audit log's "
                                f"champions: {listed}); a rollback returns only to a former "
                                "champion")
        if target.rejected:
            raise RegistryError(f"{target.model_name} v{to_version} was rejected by the gate "
                                f"({target.tags[REJECTED]}); refusing to roll back to it")
        if champion is not None and champion.version == target.version:
            raise RegistryError(f"v{to_version} is already the champion of {experiment!r}")
        return self.promote(experiment, target.version, actor=actor, action="rollback",
                            reasons=[f"rollback from v{champion.version if champion else '-'} "
                                     f"to v{target.version} by {actor}"],
                            dagster_run_id=dagster_run_id)

    def _existing(self, experiment: str, version: str) -> Version:
        found = self.version(experiment, version)
        if found is None:
            raise RegistryError(f"{registered_model_name(experiment)} has no version {version}")
        return found
