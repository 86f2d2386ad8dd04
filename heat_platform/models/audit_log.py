"""The audit log of model decisions, tamper-evident: its hash chain in the catalog, its head in
the model registry, and the champion alias kept in step with it.

* Every entry is appended through :meth:`AuditLog.record`, which chains it in the catalog
  (:mod:`heat_platform.data.audit_chain`) and then writes the chain's head (length and last
  hash) as the tag :data:`HEAD_TAG` of the experiment's registered model: a log that was cut
  short, dropped and recreated, or replaced by a consistent forgery no longer ends where the
  registry says it ends. (Two stores would have to be forged together.)
* A move of the ``champion`` alias is an ``intent`` entry, the move, and a ``confirmed`` entry
  (:meth:`heat_platform.models.registry.ModelRegistry.promote`). An intent left open by a crash
  is closed by :meth:`AuditLog.reconcile` on the next move (or ``heat-platform audit
  --repair``): ``confirmed`` when the alias did move, ``abandoned`` when it did not.
* :meth:`AuditLog.verify` checks all of it and says where it breaks.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from heat_platform.data import audit_chain
from heat_platform.data.audit_chain import ChainCheck, Head
from heat_platform.data.catalog import CHAMPION_MOVES, AuditEntry, Catalog
from heat_platform.names import CHAMPION, REGISTERED_MODEL_PREFIX, registered_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

HEAD_TAG = "heat_platform.audit_head"  # on the registered model: {"entries", "hash"} as JSON
# An intent younger than this may belong to a move in progress in another process; older ones
# were left by a crash (a move takes a few registry calls, seconds on a loaded machine).
STALE_INTENT = dt.timedelta(minutes=5)


@dataclass
class AuditCheck:
    """What :meth:`AuditLog.verify` found for one experiment: problems fail the check, notes
    do not."""

    experiment: str
    chain: ChainCheck
    recorded_head: Head | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    def __init__(self, catalog: Catalog, client: MlflowClient,
                 stale_after: dt.timedelta = STALE_INTENT) -> None:
        self.catalog, self.client, self.stale_after = catalog, client, stale_after

    # -- writing --

    def record(self, experiment: str, action: str, *, actor: str, reasons: list[str],
               model_name: str | None = None, from_version: str | None = None,
               to_version: str | None = None, dagster_run_id: str | None = None,
               phase: str | None = None, intent_id: int | None = None) -> AuditEntry:
        """Append an entry to the experiment's chain, then record the chain's head."""
        entry = self.catalog.audit(experiment, action, actor=actor, reasons=reasons,
                                   model_name=model_name, from_version=from_version,
                                   to_version=to_version, dagster_run_id=dagster_run_id,
                                   phase=phase, intent_id=intent_id)
        self._record_head(experiment)
        return entry

    def _record_head(self, experiment: str) -> None:
        """Tag the registered model with the chain's current head. Read anew (not the entry
        just written): of two writers, the later tag then never names the shorter chain, except
        when their tag writes cross, which leaves the tag one entry behind until the next one."""
        head = audit_chain.head_of(self.catalog.audit_chain(experiment))
        self.client.set_registered_model_tag(
            registered_model_name(experiment), HEAD_TAG,
            json.dumps({"entries": head.entries, "hash": head.hash}))

    def recorded_head(self, experiment: str) -> Head | None:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(registered_model_name(experiment)).tags
        except MlflowException:
            return None
        return _head(tags.get(HEAD_TAG))

    # -- the champion alias and its entries --

    def champions(self, experiment: str) -> list[AuditEntry]:
        """The completed moves of the champion alias, oldest first (entries from before the
        chain, which had no phases, count as completed)."""
        return [e for e in self.catalog.audit_chain(experiment)
                if e.action in CHAMPION_MOVES and e.phase in (None, "confirmed")]

    def open_intents(self, experiment: str, *, stale_only: bool = True) -> list[AuditEntry]:
        """Intents no entry has closed (confirmed or abandoned), oldest first."""
        entries = self.catalog.audit_chain(experiment)
        closed = {e.intent_id for e in entries if e.intent_id is not None}
        now = dt.datetime.now(dt.UTC)
        return [e for e in entries if e.phase == "intent" and e.id not in closed
                and (not stale_only or now - e.at >= self.stale_after)]

    def reconcile(self, experiment: str, champion: str | None, *,
                  stale_only: bool = True) -> list[AuditEntry]:
        """Close the intents a crash left open, given where the champion alias is now
        (``champion``, a version or None): the move happened (``confirmed``) or it did not
        (``abandoned``). Returns the entries written."""
        written = []
        for intent in self.open_intents(experiment, stale_only=stale_only):
            moved = champion == intent.to_version
            reason = (f"recovered: the champion alias is v{intent.to_version}, so the move of "
                      f"intent #{intent.id} happened; its confirmation was never written"
                      if moved else
                      f"recovered: the champion alias is v{champion or '-'}, not "
                      f"v{intent.to_version}, so the move of intent #{intent.id} never happened")
            written.append(self.record(
                experiment, intent.action, actor="recovery", reasons=[reason],
                model_name=intent.model_name, from_version=intent.from_version,
                to_version=intent.to_version, dagster_run_id=intent.dagster_run_id,
                phase="confirmed" if moved else "abandoned", intent_id=intent.id))
        return written

    # -- checking --

    def experiments(self) -> list[str]:
        """Experiments with an audit log or a recorded head (a dropped log leaves the head)."""
        names = set(self.catalog.audited_experiments())
        for model in self.client.search_registered_models(
                filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"):
            if HEAD_TAG in model.tags:
                names.add(model.name.removeprefix(REGISTERED_MODEL_PREFIX))
        return sorted(names)

    def verify(self, experiment: str) -> AuditCheck:
        """The chain re-hashed, its end against the recorded head, intents left open, and the
        champion alias against the log's last completed move."""
        entries = self.catalog.audit_chain(experiment)
        chain = audit_chain.verify(experiment, entries)
        recorded = self.recorded_head(experiment)
        check = AuditCheck(experiment, chain, recorded)
        check.problems += [str(b) for b in chain.breaks]
        if chain.legacy:
            check.notes.append(f"{len(chain.legacy)} entries from before the hash chain (#"
                               f"{chain.legacy[0]}..#{chain.legacy[-1]}) are covered only from "
                               "the first chained entry on")
        where = f"the head recorded on {registered_model_name(experiment)} ({HEAD_TAG})"
        if recorded is None:
            if entries:
                check.problems.append(f"{where} is missing: nothing outside the table says "
                                      "where the log ends")
        elif recorded.entries < 0:
            check.problems.append(f"{where} is unreadable: {recorded.hash}")
        elif recorded.entries > len(entries):
            check.problems.append(
                f"the log has {len(entries)} entries but {where} says {recorded}: entries were "
                "removed from its end, or the table was dropped and recreated")
        elif recorded.entries and chain.hashes[recorded.entries - 1] != recorded.hash:
            check.problems.append(
                f"entry {recorded.entries} of the log (#{entries[recorded.entries - 1].id}) "
                f"hashes to {chain.hashes[recorded.entries - 1][:16]} but {where} says "
                f"{recorded}: the log was rewritten")
        elif recorded.entries < len(entries):
            check.notes.append(f"{len(entries) - recorded.entries} entries after {where} "
                               f"({recorded}): written since, or a crash came between an entry "
                               "and its head")
        in_progress = False
        for intent in self.open_intents(experiment, stale_only=False):
            text = (f"intent #{intent.id} ({intent.action} v{intent.from_version or '-'} -> "
                    f"v{intent.to_version} by {intent.actor}, run {intent.dagster_run_id}) was "
                    "never confirmed or abandoned")
            if dt.datetime.now(dt.UTC) - intent.at >= self.stale_after:
                check.problems.append(text + ": the move was interrupted; the next champion "
                                      "change or `heat-platform audit --repair` closes it")
            else:
                in_progress = True
                check.notes.append(text + " yet (a move in progress?)")
        champion = self._champion(experiment)
        moves = self.champions(experiment)
        expected = moves[-1].to_version if moves else None
        if champion != expected and not in_progress:
            check.problems.append(
                f"the champion alias is v{champion or '-'} but the log's last completed move "
                f"is to v{expected or '-'}: the alias was moved outside the platform")
        return check

    def _champion(self, experiment: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(
                registered_model_name(experiment), CHAMPION).version)
        except MlflowException:
            return None


def _head(text: str | None) -> Head | None:
    if not text:
        return None
    try:
        value = json.loads(text)
        return Head(int(value["entries"]), str(value["hash"]))
    except (ValueError, KeyError, TypeError):
        return Head(-1, repr(text[:60]))
