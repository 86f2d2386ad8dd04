"""What the landing-zone sensor should do on one tick: the decision, without Dagster.

What the sensor saw of each file (the last (size, mtime), its sha256, the content last announced)
is kept in the catalog (:meth:`Catalog.landing_state`); the cursor is a small JSON document
holding a generation number, which makes a tick's announcements count only once Dagster has
recorded that tick with its run requests (a tick lost in a crash is announced again, under the
same run keys). A tick:

1. lists the landing zone; everything not taken is reported (:class:`Skipped`), never dropped;
2. waits until each file is stable across two ticks (writers that write in place are not read
   half-way; writers that write-then-rename are taken at once on the next tick);
3. hashes only files whose (size, mtime) changed, so a touched-but-unchanged file is no news;
4. announces a problem.yaml whose content changed (run ``problem_spec``), and a batch whose
   content changed (run the ingestion job) **only once its experiment's current problem.yaml
   has been ingested and is valid**: validation needs the domain. Deferred batches are not
   marked as announced, so a later tick takes them.

A tick's work is bounded (:class:`TickLimits`): files above the size limit are reported and
never read; at most ``hash_bytes`` are hashed and ``new_batches`` runs requested, the rest
waits for the next tick. Experiments take turns (oldest file first within each), so one bulk
drop neither makes every tick time out nor starves the other experiments. Every file is read
through the landing zone's hardened open (:meth:`LandingZone.digest`).

Run keys carry the content hash and the file's mtime: a restart or a re-tick with the same
cursor requests nothing new (and Dagster refuses a run key twice), and a file changed back to
an older content still gets a run.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from heat_platform.data.catalog import Catalog
from heat_platform.data.contract import DEFAULT_MAX_FILE_BYTES, BatchReadError, check_size
from heat_platform.data.landing import (
    PROBLEM_FILE,
    STATE_VERSION,
    FileVersion,
    LandingFile,
    LandingZone,
    Skipped,
    fingerprint,
    observe,
)
from heat_platform.heat.spec import MAX_BYTES as MAX_SPEC_BYTES

CURSOR_VERSION = 2


@dataclass(frozen=True)
class TickLimits:
    """What one tick may do, whatever lies in the landing zone."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    """Batch files above this size are reported and never read (nor copied)."""
    hash_bytes: int = 2 * 1024**3
    """Bytes hashed per tick at most (at least one file is, whatever its size)."""
    new_batches: int = 100
    """Batch ingestion runs requested per tick at most."""


@dataclass(frozen=True)
class Announcement:
    experiment: str
    batch: str | None  # None: the problem.yaml
    sha256: str
    mtime_ns: int

    @property
    def run_key(self) -> str:
        what = "problem.yaml" if self.batch is None else self.batch
        return f"{self.experiment}|{what}@{self.sha256}@{self.mtime_ns}"


@dataclass
class TickPlan:
    specs: list[Announcement] = field(default_factory=list)
    batches: list[Announcement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # human-readable, for the tick's log
    deferred: int = 0  # ready files left for the next tick by the tick's limits
    cursor: str = ""

    @property
    def experiments(self) -> list[str]:
        return sorted({a.experiment for a in self.specs + self.batches})


def plan_tick(zone: LandingZone, catalog: Catalog, cursor: str | None, *,
              now_ns: int | None = None, min_age_s: float = 0.0,
              limits: TickLimits | None = None) -> TickPlan:
    limits = limits or TickLimits()
    generation = _generation(cursor, catalog)
    state = {kind: {"v": STATE_VERSION, "files": catalog.landing_state(kind, generation)}
             for kind in ("spec", "batch")}
    now_ns = now_ns or time.time_ns()
    plan = TickPlan()

    experiments = zone.experiments()
    plan.skipped.extend(experiments.skipped)
    spec_files = []
    for experiment in experiments.experiments:
        path = zone.problem_file(experiment)
        try:
            stat = path.stat()
        except OSError as error:
            plan.skipped.append(Skipped(path, f"cannot stat: {error.strerror}"))
            continue
        spec_file = LandingFile(experiment, PROBLEM_FILE, path, stat.st_size, stat.st_mtime_ns)
        if stat.st_size > MAX_SPEC_BYTES:
            plan.skipped.append(Skipped(path, f"{PROBLEM_FILE} is {stat.st_size:,} bytes; the "
                                              f"limit is {MAX_SPEC_BYTES:,}; not read"))
            continue
        spec_files.append(spec_file)
    seen_specs = observe(state["spec"], spec_files, now_ns=now_ns, min_age_s=min_age_s)
    spec_prints = fingerprint(seen_specs.state, seen_specs.ready, hasher=zone.digest)
    plan.skipped.extend(spec_prints.errors)
    for version in spec_prints.new:
        plan.specs.append(_announce(version, batch=None))
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
        for landing_file in scan.files:
            try:
                check_size(landing_file.path.name, landing_file.size, limits.max_file_bytes)
            except BatchReadError as error:
                plan.skipped.append(Skipped(landing_file.path, f"not read: {error}"))
                continue
            files.append(landing_file)
    seen = observe(state["batch"], files, now_ns=now_ns, min_age_s=min_age_s)
    plan.waiting.extend(f"{p.file.path}: {p.reason}" for p in seen.pending)
    ready = _taking_turns([f for f in seen.ready if f.experiment in ready_experiments])
    prints = fingerprint(seen.state, ready, hasher=zone.digest,
                         max_hash_bytes=limits.hash_bytes, max_new=limits.new_batches)
    plan.skipped.extend(prints.errors)
    for version in prints.new:
        plan.batches.append(_announce(version, batch=version.file.batch))
    if prints.deferred:
        plan.deferred = len(prints.deferred)
        plan.waiting.append(
            f"{len(prints.deferred)} ready file(s) wait for the next tick: a tick hashes at most "
            f"{limits.hash_bytes:,} bytes and requests at most {limits.new_batches} ingestion "
            "runs")

    catalog.save_landing_state("spec", state["spec"]["files"], spec_prints.state["files"],
                               generation + 1)
    catalog.save_landing_state("batch", state["batch"]["files"],
                               _keep_unready(seen.state, prints.state)["files"], generation + 1)
    plan.cursor = json.dumps({"v": CURSOR_VERSION, "generation": generation + 1})
    return plan


def _taking_turns(files: list[LandingFile]) -> list[LandingFile]:
    """Experiments in turn (the first file of each, then the second...), each oldest first, so
    a bulk drop in one experiment does not hold up the others."""
    by_experiment: dict[str, list[LandingFile]] = {}
    for landing_file in sorted(files, key=lambda f: (f.mtime_ns, f.batch)):
        by_experiment.setdefault(landing_file.experiment, []).append(landing_file)
    rounds = itertools.zip_longest(*(by_experiment[name] for name in sorted(by_experiment)))
    return [landing_file for turn in rounds for landing_file in turn if landing_file is not None]


def _announce(version: FileVersion, batch: str | None) -> Announcement:
    landing_file = version.file
    return Announcement(landing_file.experiment, batch, version.sha256, landing_file.mtime_ns)


def _keep_unready(observed: dict[str, Any], fingerprinted: dict[str, Any]) -> dict[str, Any]:
    """fingerprint() returns entries for the files it hashed; keep the observations of the
    files it did not get (deferred experiments), so their stability is not forgotten."""
    files = dict(observed["files"])
    files.update(fingerprinted["files"])
    return {**observed, "files": files}


def _generation(cursor: str | None, catalog: Catalog) -> int:
    """The generation of the last recorded tick; a cursor of the first version (which held the
    per-file state itself) is moved into the catalog, as recorded announcements."""
    state = json.loads(cursor) if cursor else {}
    if state.get("v") == CURSOR_VERSION:
        return int(state["generation"])
    if state.get("v") == 1:
        for kind, name in (("spec", "specs"), ("batch", "batches")):
            files = state.get(name, {}).get("files", {})
            catalog.save_landing_state(kind, {}, files, 0)
    return 0
