"""What the landing-zone sensor should do on one tick: the decision, without Dagster.

The cursor (a small JSON document) remembers, per file, the last (size, mtime) and sha256 seen
and how many versions were announced. A tick:

1. lists the landing zone; everything not taken is reported (:class:`Skipped`), never dropped;
2. waits until each file is stable across two ticks (writers that write in place are not read
   half-way; writers that write-then-rename are taken at once on the next tick);
3. hashes only files whose (size, mtime) changed, so a touched-but-unchanged file is no news;
4. announces a problem.yaml whose content changed (run ``problem_spec``), and a batch whose
   content changed (run the ingestion job) **only once its experiment's current problem.yaml
   has been ingested and is valid**: validation needs the domain. Deferred batches are not
   marked as announced, so a later tick takes them.

Run keys carry the content hash and a per-file sequence number: a restart or a re-tick with the
same cursor requests nothing new, and a file changed back to an older content still gets a run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from heat_platform.data.catalog import Catalog
from heat_platform.data.landing import (
    LandingFile,
    LandingZone,
    Skipped,
    empty_state,
    fingerprint,
    observe,
)

CURSOR_VERSION = 1


@dataclass(frozen=True)
class Announcement:
    experiment: str
    batch: str | None  # None: the problem.yaml
    sha256: str
    sequence: int

    @property
    def run_key(self) -> str:
        what = "problem.yaml" if self.batch is None else self.batch
        return f"{self.experiment}|{what}@{self.sha256}#{self.sequence}"


@dataclass
class TickPlan:
    specs: list[Announcement] = field(default_factory=list)
    batches: list[Announcement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # human-readable, for the tick's log
    cursor: str = ""

    @property
    def experiments(self) -> list[str]:
        return sorted({a.experiment for a in self.specs + self.batches})


def plan_tick(zone: LandingZone, catalog: Catalog, cursor: str | None, *,
              now_ns: int | None = None, min_age_s: float = 0.0) -> TickPlan:
    state = _load(cursor)
    now_ns = now_ns or time.time_ns()
    plan = TickPlan()

    experiments = zone.experiments()
    plan.skipped.extend(experiments.skipped)
    spec_files = []
    for experiment in experiments.experiments:
        path = zone.problem_file(experiment)
        stat = path.stat()
        spec_files.append(LandingFile(experiment, "problem.yaml", path, stat.st_size, stat.st_mtime_ns))
    seen_specs = observe(state["specs"], spec_files, now_ns=now_ns, min_age_s=min_age_s)
    spec_prints = fingerprint(seen_specs.state, seen_specs.ready)
    plan.skipped.extend(spec_prints.errors)
    for version in spec_prints.new:
        plan.specs.append(_announce(state, version.file, version.sha256, batch=None))
    plan.waiting.extend(f"{p.file.path}: {p.reason}" for p in seen_specs.pending)

    # Which experiments may ingest batches: their latest ingested problem.yaml is the one in the
    # landing zone now, and it was valid.
    landing_sha = {v.file.experiment: v.sha256 for v in spec_prints.versions}
    ready_experiments = set()
    for experiment, sha in landing_sha.items():
        latest = catalog.latest_spec(experiment)
        if latest is not None and latest.sha256 == sha and latest.valid:
            ready_experiments.add(experiment)
        elif latest is not None and latest.sha256 == sha:
            plan.waiting.append(f"{experiment}: batches wait for a valid problem.yaml "
                                f"({latest.message})")
        else:
            plan.waiting.append(f"{experiment}: batches wait until problem.yaml is ingested")

    files: list[LandingFile] = []
    for experiment in experiments.experiments:
        scan = zone.batch_files(experiment)
        plan.skipped.extend(scan.skipped)
        files.extend(scan.files)
    seen = observe(state["batches"], files, now_ns=now_ns, min_age_s=min_age_s)
    plan.waiting.extend(f"{p.file.path}: {p.reason}" for p in seen.pending)
    ready = [f for f in seen.ready if f.experiment in ready_experiments]
    prints = fingerprint(seen.state, ready)
    plan.skipped.extend(prints.errors)
    for version in prints.new:
        plan.batches.append(
            _announce(state, version.file, version.sha256, batch=version.file.batch))

    state["specs"], state["batches"] = spec_prints.state, _keep_unready(seen.state, prints.state)
    plan.cursor = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return plan


def _announce(state: dict[str, Any], landing_file: LandingFile, sha256: str,
              batch: str | None) -> Announcement:
    key = landing_file.key
    state["sequence"][key] = state["sequence"].get(key, 0) + 1
    return Announcement(landing_file.experiment, batch, sha256, state["sequence"][key])


def _keep_unready(observed: dict[str, Any], fingerprinted: dict[str, Any]) -> dict[str, Any]:
    """fingerprint() returns entries for the files it hashed; keep the observations of the
    files it did not get (deferred experiments), so their stability is not forgotten."""
    files = dict(observed["files"])
    files.update(fingerprinted["files"])
    return {**observed, "files": files}


def _load(cursor: str | None) -> dict[str, Any]:
    if cursor:
        state = json.loads(cursor)
        if state.get("v") == CURSOR_VERSION:
            return state
    return {"v": CURSOR_VERSION, "specs": empty_state(), "batches": empty_state(), "sequence": {}}
