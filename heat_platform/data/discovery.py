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

A tick's work is bounded (:class:`TickLimits`): files above the size limit are reported and
never read; at most ``hash_bytes`` are hashed and ``new_batches`` runs requested, the rest
waits for the next tick. Experiments take turns (oldest file first within each), so one bulk
drop neither makes every tick time out nor starves the other experiments. Every file is read
through the landing zone's hardened open (:meth:`LandingZone.digest`).

Run keys carry the content hash and a per-file sequence number: a restart or a re-tick with the
same cursor requests nothing new, and a file changed back to an older content still gets a run.
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
    LandingFile,
    LandingZone,
    Skipped,
    empty_state,
    fingerprint,
    observe,
)
from heat_platform.heat.spec import MAX_BYTES as MAX_SPEC_BYTES

CURSOR_VERSION = 1


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
    deferred: int = 0  # ready files left for the next tick by the tick's limits
    cursor: str = ""

    @property
    def experiments(self) -> list[str]:
        return sorted({a.experiment for a in self.specs + self.batches})


def plan_tick(zone: LandingZone, catalog: Catalog, cursor: str | None, *,
              now_ns: int | None = None, min_age_s: float = 0.0,
              limits: TickLimits | None = None) -> TickPlan:
    limits = limits or TickLimits()
    state = _load(cursor)
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
    seen_specs = observe(state["specs"], spec_files, now_ns=now_ns, min_age_s=min_age_s)
    spec_prints = fingerprint(seen_specs.state, seen_specs.ready, hasher=zone.digest)
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
        for landing_file in scan.files:
            try:
                check_size(landing_file.path.name, landing_file.size, limits.max_file_bytes)
            except BatchReadError as error:
                plan.skipped.append(Skipped(landing_file.path, f"not read: {error}"))
                continue
            files.append(landing_file)
    seen = observe(state["batches"], files, now_ns=now_ns, min_age_s=min_age_s)
    plan.waiting.extend(f"{p.file.path}: {p.reason}" for p in seen.pending)
    ready = _taking_turns([f for f in seen.ready if f.experiment in ready_experiments])
    prints = fingerprint(seen.state, ready, hasher=zone.digest,
                         max_hash_bytes=limits.hash_bytes, max_new=limits.new_batches)
    plan.skipped.extend(prints.errors)
    for version in prints.new:
        plan.batches.append(
            _announce(state, version.file, version.sha256, batch=version.file.batch))
    if prints.deferred:
        plan.deferred = len(prints.deferred)
        plan.waiting.append(
            f"{len(prints.deferred)} ready file(s) wait for the next tick: a tick hashes at most "
            f"{limits.hash_bytes:,} bytes and requests at most {limits.new_batches} ingestion "
            "runs")

    state["specs"], state["batches"] = spec_prints.state, _keep_unready(seen.state, prints.state)
    plan.cursor = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return plan


def _taking_turns(files: list[LandingFile]) -> list[LandingFile]:
    """Experiments in turn (the first file of each, then the second...), each oldest first, so
    a bulk drop in one experiment does not hold up the others."""
    by_experiment: dict[str, list[LandingFile]] = {}
    for landing_file in sorted(files, key=lambda f: (f.mtime_ns, f.batch)):
        by_experiment.setdefault(landing_file.experiment, []).append(landing_file)
    rounds = itertools.zip_longest(*(by_experiment[name] for name in sorted(by_experiment)))
    return [landing_file for turn in rounds for landing_file in turn if landing_file is not None]


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
