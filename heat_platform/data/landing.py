"""The landing zone: where labs drop batch files, and how the sensor discovers them safely.

Layout::

    <landing>/<experiment>/problem.yaml
    <landing>/<experiment>/<batch>.parquet | <batch>.csv

* Experiment names match ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`` (and contain no ``...``).
* The batch key is the file name without its extension, NFC-normalised (a name typed on a
  Mac arrives decomposed). Spaces and unicode are fine. Keys must also be valid Dagster
  partition keys, so names with ``|``, ``,``, ``...``, ``[``, ``]``, a backslash, control or
  invisible formatting characters, or a leading ``.`` are refused.
* Two files with the same key (``b1.csv`` and ``b1.parquet``) are a conflict: both are
  reported, neither is taken, until one is removed.
* In-flight files are ignored by convention, so writers can write then rename: hidden
  (``.name``), ``*.tmp``, ``*.part``, ``*.crdownload`` and ``name~``.

Nothing found is dropped silently: every entry that is not taken is returned as a
:class:`Skipped` with a reason, for the sensor to log.

Path safety: the zone never builds a path from a user-supplied string without
:func:`safe_join`, resolves real paths, refuses symlinks (experiment dirs, ``problem.yaml``,
batch files) that lead outside the landing root or in a loop and anything that is not a regular
file (a FIFO would block the sensor), and :meth:`LandingZone.open` checks the file actually
opened (through ``/proc/self/fd`` on Linux) so a swap between check and use cannot redirect a
read. Everything that reads landing bytes goes through it: the sensor's hash
(:meth:`LandingZone.digest`, which also reads no more than the size it observed, so a file
swapped for a FIFO, ``/dev/zero`` or an endless writer cannot hang a tick) and the landing copy.
Hard links cannot be told apart from ordinary files; whoever can create one in the landing
zone could also copy the file there.

Completeness: :func:`observe` is a pure function over a JSON-able state (the sensor keeps it in
its cursor) that declares a file ready once its (size, mtime_ns) is unchanged since the previous
tick (and, optionally, older than ``min_age_s``). :func:`fingerprint` hashes ready files,
reusing the cached sha256 while (size, mtime_ns) is unchanged, and says which content is new:
a touched but unchanged file (new mtime, same bytes) keeps its sha and is not announced again.
Its work per call is bounded (bytes hashed, versions announced): what does not fit is deferred,
unannounced, to the next call, so a bulk drop is taken over several ticks instead of making
every tick time out.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from heat_platform.data.contract import FORMATS
from heat_platform.names import EXPERIMENT_NAME

PROBLEM_FILE = "problem.yaml"
HASH_CHUNK_BYTES = 4 * 1024 * 1024
IN_FLIGHT_SUFFIXES = (".tmp", ".part", ".crdownload")
KEY_SEPARATOR = "|"

# Characters Dagster cannot have in a partition key, or that our multi-part keys use.
_FORBIDDEN_SUBSTRINGS = ("|", ",", "...", "[", "]", "\\")
# Control (Cc), format/invisible incl. bidi overrides (Cf), surrogates (Cs), line/paragraph
# separators (Zl, Zp): nothing a person can read in a Dagster UI or a log line.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


class LandingError(Exception):
    """A landing-zone path or name that the platform refuses to use."""


@dataclass(frozen=True)
class Skipped:
    """An entry of the landing zone that was not taken, and why (for the sensor's log)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class LandingFile:
    experiment: str
    batch: str
    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return batch_key(self.experiment, self.batch)

    @property
    def ext(self) -> str:
        """Lower-case extension without the dot: ``parquet`` or ``csv``."""
        return self.path.suffix.lower().lstrip(".")


@dataclass(frozen=True)
class ExperimentScan:
    experiments: list[str]
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class BatchScan:
    files: list[LandingFile]
    skipped: list[Skipped] = field(default_factory=list)


# --- names -------------------------------------------------------------------------------------


def experiment_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid experiment name, or None."""
    if not EXPERIMENT_NAME.fullmatch(name):
        return (
            f"experiment name {name!r} does not match {EXPERIMENT_NAME.pattern} "
            "(start with a letter or digit; letters, digits, '_', '.', '-'; at most 64)"
        )
    if "..." in name:
        return f"experiment name {name!r} contains '...' (not allowed in partition keys)"
    return None


def batch_name_problem(name: str) -> str | None:
    """Why ``name`` (an NFC batch key) cannot be a batch key, or None."""
    if not name:
        return "empty batch name"
    if name.startswith("."):
        return f"batch name {name!r} starts with '.'"
    for bad in _FORBIDDEN_SUBSTRINGS:
        if bad in name:
            return f"batch name {name!r} contains {bad!r} (not allowed in partition keys)"
    for char in name:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return (
                f"batch name {name!r} contains the control or invisible character "
                f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"
            )
    if len(name.encode()) > 200:
        return f"batch name is {len(name.encode())} bytes long (at most 200)"
    return None


def batch_key(experiment: str, batch: str) -> str:
    """``"<experiment>|<batch>"``: unambiguous because neither part may contain ``|``."""
    for problem in (experiment_name_problem(experiment), batch_name_problem(batch)):
        if problem:
            raise LandingError(problem)
    return f"{experiment}{KEY_SEPARATOR}{batch}"


def parse_batch_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`batch_key`, validating both parts."""
    experiment, sep, batch = key.partition(KEY_SEPARATOR)
    if not sep:
        raise LandingError(f"batch key {key!r} has no '{KEY_SEPARATOR}'")
    batch_key(experiment, batch)
    return experiment, batch


def is_in_flight(name: str) -> bool:
    """Names writers use while a file is incomplete (write-then-rename convention)."""
    lower = name.lower()
    return name.startswith(".") or name.endswith("~") or lower.endswith(IN_FLIGHT_SUFFIXES)


# --- paths -------------------------------------------------------------------------------------


def safe_join(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts...`` resolved, raising :class:`LandingError` if the result is not inside
    ``root`` (``..``, absolute parts, symlinks leading out). Each part must be a non-empty
    single path component."""
    base = Path(os.path.realpath(root))
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part or os.sep in part:
            raise LandingError(f"unsafe path component {part!r}")
    candidate = Path(os.path.realpath(base.joinpath(*parts)))
    if not _inside(candidate, base):
        raise LandingError(f"{'/'.join(parts)!r} leads outside {str(base)!r}")
    return candidate


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


# --- discovery ---------------------------------------------------------------------------------


class LandingZone:
    """Read-only view of ``<landing>``. Nothing here writes, moves or deletes user files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))

    def experiments(self) -> ExperimentScan:
        """Experiment directories holding a ``problem.yaml``; everything else is reported."""
        found: list[str] = []
        skipped: list[Skipped] = []
        for entry in self._entries(self.root, skipped):
            name = entry.name
            if is_in_flight(name):
                skipped.append(Skipped(Path(entry.path), "hidden or in-flight entry ignored"))
                continue
            target = self._resolve_inside(Path(entry.path), skipped)
            if target is None:
                continue
            if not target.is_dir():
                skipped.append(
                    Skipped(
                        Path(entry.path),
                        "file at the landing root: put batches in "
                        "<landing>/<experiment>/ next to a problem.yaml",
                    )
                )
                continue
            problem = experiment_name_problem(name)
            if problem:
                skipped.append(Skipped(Path(entry.path), problem))
                continue
            spec = Path(entry.path) / PROBLEM_FILE
            if not spec.exists() and not spec.is_symlink():
                skipped.append(
                    Skipped(Path(entry.path), f"no {PROBLEM_FILE} in the experiment directory")
                )
                continue
            spec_target = self._resolve_inside(spec, skipped)
            if spec_target is None:
                continue
            if not spec_target.is_file():
                skipped.append(Skipped(spec, f"{PROBLEM_FILE} is not a regular file"))
                continue
            found.append(name)
        return ExperimentScan(sorted(found), skipped)

    def problem_file(self, experiment: str) -> Path:
        """The experiment's ``problem.yaml``, checked to be inside the landing root."""
        problem = experiment_name_problem(experiment)
        if problem:
            raise LandingError(problem)
        return safe_join(self.root, experiment, PROBLEM_FILE)

    def batch_files(self, experiment: str) -> BatchScan:
        """The batch files of one experiment, keyed by NFC stem; conflicts and refusals are
        reported in ``skipped``."""
        problem = experiment_name_problem(experiment)
        if problem:
            raise LandingError(problem)
        directory = safe_join(self.root, experiment)
        skipped: list[Skipped] = []
        by_key: dict[str, list[LandingFile]] = {}
        for entry in self._entries(directory, skipped):
            path = Path(entry.path)
            name = unicodedata.normalize("NFC", entry.name)
            if name == PROBLEM_FILE:
                continue
            if is_in_flight(name):
                skipped.append(
                    Skipped(path, "in-flight or hidden file ignored (rename it when complete)")
                )
                continue
            stem, dot, suffix = name.rpartition(".")
            if not dot or f".{suffix.lower()}" not in FORMATS:
                kind = f"'.{suffix}'" if dot else "(no extension)"
                skipped.append(
                    Skipped(path, f"unsupported file type {kind}: batches are .parquet or .csv")
                )
                continue
            problem = batch_name_problem(stem)
            if problem:
                skipped.append(Skipped(path, problem))
                continue
            try:
                if entry.is_symlink():  # only links need resolving: the directory is real
                    target = self._resolve_inside(path, skipped)
                    if target is None:
                        continue
                    info = target.stat()
                else:
                    info = entry.stat(follow_symlinks=False)
            except OSError as error:
                skipped.append(Skipped(path, f"cannot stat: {error.strerror}"))
                continue
            if stat.S_ISDIR(info.st_mode):
                skipped.append(Skipped(path, "subdirectory ignored (batches are files)"))
                continue
            if not stat.S_ISREG(info.st_mode):
                skipped.append(Skipped(path, "not a regular file"))
                continue
            by_key.setdefault(stem, []).append(
                LandingFile(experiment, stem, path, info.st_size, info.st_mtime_ns)
            )
        files = []
        for key, candidates in sorted(by_key.items()):
            if len(candidates) == 1:
                files.append(candidates[0])
                continue
            names = ", ".join(sorted(c.path.name for c in candidates))
            for candidate in candidates:
                skipped.append(
                    Skipped(
                        candidate.path,
                        f"conflict: batch {key!r} has several files ({names}); "
                        "none is taken until only one remains",
                    )
                )
        return BatchScan(files, skipped)

    def scan(self) -> BatchScan:
        """Every batch file of every experiment, with everything skipped on the way."""
        experiments = self.experiments()
        files: list[LandingFile] = []
        skipped = list(experiments.skipped)
        for experiment in experiments.experiments:
            batch = self.batch_files(experiment)
            files += batch.files
            skipped += batch.skipped
        return BatchScan(files, skipped)

    def locate(self, experiment: str, batch: str) -> LandingFile:
        """The file behind a batch key (e.g. a partition key), found by listing the directory:
        the key is never used to build a path, and the name on disk may be NFD."""
        batch_key(experiment, batch)
        scan = self.batch_files(experiment)
        for landing_file in scan.files:
            if landing_file.batch == batch:
                return landing_file
        reasons = [
            s.reason for s in scan.skipped if unicodedata.normalize("NFC", s.path.stem) == batch
        ]
        detail = f": {reasons[0]}" if reasons else ""
        raise LandingError(
            f"no usable file for batch {batch!r} in experiment {experiment!r}{detail}"
        )

    def open(self, landing_file: LandingFile) -> BinaryIO:
        """Open a batch file for reading, verifying that what was opened is a regular file
        inside the landing root (defeats symlink swaps between scan and read)."""
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(landing_file.path, flags)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise LandingError(f"{landing_file.path} is not a regular file ({_kind(mode)})")
            opened = _opened_path(fd) or Path(os.path.realpath(landing_file.path))
            if not _inside(opened, self.root):
                raise LandingError(f"{landing_file.path} leads outside the landing root ({opened})")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def digest(self, landing_file: LandingFile) -> str:
        """sha256 of a landing file read through :meth:`open`, reading at most the size it was
        observed with (+1 byte to notice more): a file that grew, or was swapped for an endless
        one, is a :class:`LandingError` instead of a read that never ends."""
        digest = hashlib.sha256()
        remaining = landing_file.size + 1
        with self.open(landing_file) as handle:
            while remaining > 0 and (chunk := handle.read(min(HASH_CHUNK_BYTES, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
        if remaining <= 0:
            raise LandingError(f"{landing_file.path} holds more than the {landing_file.size} "
                               "bytes it had when it was observed")
        return digest.hexdigest()

    # -- helpers --

    def _entries(self, directory: Path, skipped: list[Skipped]) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError as error:
            skipped.append(Skipped(directory, f"cannot list directory: {error.strerror}"))
            return []

    def _resolve_inside(self, path: Path, skipped: list[Skipped]) -> Path | None:
        """Real path of ``path`` if it stays inside the landing root, else report and None."""
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                reason = "symlink loop (it leads back to itself); refused"
            elif path.is_symlink():
                reason = "broken symlink"
            else:
                reason = "vanished" if error.errno == errno.ENOENT else f"cannot stat: {error.strerror}"
            skipped.append(Skipped(path, reason))
            return None
        try:
            real = Path(os.path.realpath(path))
        except OSError:  # a link when realpath looked, something else when it read the link
            skipped.append(Skipped(path, "changed while its symlink was being resolved; refused"))
            return None
        if not _inside(real, self.root):
            # only a symlink (the file or a folder above it) leads outside; asking which again
            # would race with a file swapped meanwhile
            skipped.append(
                Skipped(path, f"symlink points outside the landing root ({real}); refused")
            )
            return None
        return real


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def _opened_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # not Linux: fall back to realpath (small race window)
        return None


# --- completeness and content ------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    file: LandingFile
    reason: str


@dataclass(frozen=True)
class Observation:
    state: dict[str, Any]
    ready: list[LandingFile]
    pending: list[Pending]
    vanished: list[str]


@dataclass(frozen=True)
class FileVersion:
    file: LandingFile
    sha256: str
    is_new: bool


@dataclass(frozen=True)
class Fingerprints:
    state: dict[str, Any]
    versions: list[FileVersion]
    errors: list[Skipped]
    deferred: list[LandingFile] = field(default_factory=list)  # over the tick's bounds

    @property
    def new(self) -> list[FileVersion]:
        return [v for v in self.versions if v.is_new]


STATE_VERSION = 1


def empty_state() -> dict[str, Any]:
    return {"v": STATE_VERSION, "files": {}}


def observe(
    state: Mapping[str, Any] | None,
    files: Iterable[LandingFile],
    *,
    now_ns: int,
    min_age_s: float = 0.0,
) -> Observation:
    """Which files are complete. Pure: same inputs, same output; ``state`` is not modified.

    A file is ready when the previous observation saw the same (size, mtime_ns) and, with
    ``min_age_s``, its mtime is at least that old. Per file, the state keeps the last
    (size, mtime_ns), the cached sha256 for that pair and the sha last announced.
    """
    previous = dict((state or empty_state()).get("files", {}))
    new_files: dict[str, Any] = {}
    ready: list[LandingFile] = []
    pending: list[Pending] = []
    for landing_file in files:
        key = landing_file.key
        seen = previous.get(key)
        same = seen is not None and (seen["size"], seen["mtime_ns"]) == (
            landing_file.size,
            landing_file.mtime_ns,
        )
        entry = {
            "size": landing_file.size,
            "mtime_ns": landing_file.mtime_ns,
            "sha256": seen.get("sha256") if same else None,
            "announced": seen.get("announced") if seen else None,
        }
        new_files[key] = entry
        age_s = (now_ns - landing_file.mtime_ns) / 1e9
        if seen is None:
            pending.append(
                Pending(landing_file, "first seen; waiting for one unchanged observation")
            )
        elif not same:
            pending.append(
                Pending(landing_file, "size or mtime changed since the last observation")
            )
        elif min_age_s > 0 and age_s < min_age_s:
            pending.append(Pending(landing_file, f"modified {age_s:.1f} s ago (< {min_age_s} s)"))
        else:
            ready.append(landing_file)
    vanished = sorted(set(previous) - set(new_files))
    return Observation({"v": STATE_VERSION, "files": new_files}, ready, pending, vanished)


def fingerprint(
    state: Mapping[str, Any],
    ready: Iterable[LandingFile],
    *,
    hasher: Callable[[LandingFile], str],
    max_hash_bytes: int | None = None,
    max_new: int | None = None,
) -> Fingerprints:
    """sha256 of each ready file (cached while its size and mtime are unchanged) and whether
    that content is new since it was last announced. Returns the updated state: the caller
    announces (requests a run for) every ``is_new`` version, in the same tick.

    ``hasher`` reads the file (:meth:`LandingZone.digest`). Work is bounded, in the order
    ``ready`` is given: files are hashed until ``max_hash_bytes`` are spent (at least one file
    is, so a file larger than the budget still gets its turn), and at most ``max_new`` new
    versions are announced. Files beyond either bound are in ``deferred``, not announced, and
    come back on the next call."""
    files = {key: dict(entry) for key, entry in state.get("files", {}).items()}
    versions: list[FileVersion] = []
    errors: list[Skipped] = []
    deferred: list[LandingFile] = []
    hashed_bytes = hashed_files = announced = 0
    for landing_file in ready:
        entry = files.setdefault(
            landing_file.key,
            {
                "size": landing_file.size,
                "mtime_ns": landing_file.mtime_ns,
                "sha256": None,
                "announced": None,
            },
        )
        sha = entry.get("sha256")
        if sha is None:
            if (max_hash_bytes is not None and hashed_files
                    and hashed_bytes + landing_file.size > max_hash_bytes):
                deferred.append(landing_file)
                continue
            hashed_files += 1
            hashed_bytes += landing_file.size
            try:
                sha = hasher(landing_file)
                after = os.stat(landing_file.path)
            except OSError as error:
                errors.append(Skipped(landing_file.path, f"cannot hash: {error.strerror}"))
                continue
            except LandingError as error:
                errors.append(Skipped(landing_file.path, f"not hashed: {error}"))
                continue
            if (after.st_size, after.st_mtime_ns) != (landing_file.size, landing_file.mtime_ns):
                # Changed while hashing: the sha may describe a torn read; try next tick.
                entry.update(size=after.st_size, mtime_ns=after.st_mtime_ns, sha256=None)
                errors.append(Skipped(landing_file.path, "changed while being hashed; retrying"))
                continue
            entry["sha256"] = sha
        is_new = sha != entry.get("announced")
        if is_new and max_new is not None and announced >= max_new:
            deferred.append(landing_file)
            continue
        announced += is_new
        entry["announced"] = sha
        versions.append(FileVersion(landing_file, sha, is_new))
    return Fingerprints({"v": STATE_VERSION, "files": files}, versions, errors, deferred)
