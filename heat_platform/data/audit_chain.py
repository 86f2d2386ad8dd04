"""The audit log's hash chain: what makes an edited, removed or replaced entry visible.

Each experiment's entries form one chain, oldest first (by id): an entry stores ``prev_hash``,
the hash of the entry before it (:data:`GENESIS` for the first), and ``entry_hash``, the sha256
of its canonical form (:func:`canonical`: every field but the id and the hash itself, as
sorted-key JSON), so changing any field of any entry, removing one or slipping one in between
breaks the chain at that place. What the chain cannot show is entries cut off its end or the
whole table replaced by a consistent forgery; the chain's head (:class:`Head`, its length and
last hash) is therefore also recorded outside the table (see
:mod:`heat_platform.models.audit_log`).

Entries written before the chain existed (``entry_hash`` NULL) are *legacy*: they are hashed
in place as if they had been chained, and the first chained entry's ``prev_hash`` is that
hash, so from then on they are covered too; what happened to them before cannot be known, and
the check says how many there are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (catalog imports this module when it writes an entry)
    from heat_platform.data.catalog import AuditEntry as Entry

GENESIS = "0" * 64  # prev_hash of an experiment's first entry
HASHED = ("at", "experiment", "action", "phase", "actor", "model_name", "from_version",
          "to_version", "reasons", "dagster_run_id", "intent_id", "prev_hash")


def canonical(values: dict[str, Any]) -> bytes:
    """The bytes an entry's hash is taken over: the :data:`HASHED` fields as sorted-key JSON,
    the time as UTC ISO 8601 with microseconds (what every database gives back)."""
    at = values["at"]
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    document = {name: values.get(name) for name in HASHED}
    document["at"] = at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    document["reasons"] = list(values.get("reasons") or [])
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def entry_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(values)).hexdigest()


def _values(entry: Entry, prev_hash: str | None = None) -> dict[str, Any]:
    values = {name: getattr(entry, name) for name in HASHED}
    if prev_hash is not None:
        values["prev_hash"] = prev_hash
    return values


@dataclass(frozen=True)
class Head:
    """Where an experiment's chain ends: how many entries it has and the last one's hash."""

    entries: int
    hash: str

    def __str__(self) -> str:
        return f"{self.entries} entries, last hash {self.hash[:16]}"


@dataclass(frozen=True)
class Break:
    """One place where the chain does not hold, said in words."""

    entry_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"entry #{self.entry_id}: " if self.entry_id is not None else ""
        return where + self.problem


@dataclass
class ChainCheck:
    """An experiment's chain as verified: its head, its breaks, and what it could not cover."""

    experiment: str
    head: Head
    hashes: list[str] = field(default_factory=list)  # each entry's hash, oldest first
    breaks: list[Break] = field(default_factory=list)
    legacy: list[int] = field(default_factory=list)  # ids of entries written before the chain

    @property
    def ok(self) -> bool:
        return not self.breaks


def head_of(entries: Sequence[Entry]) -> Head:
    """The head an append continues from (entries oldest first; legacy ones hashed in place)."""
    previous = GENESIS
    for entry in entries:
        previous = entry.entry_hash or entry_hash(_values(entry, previous))
    return Head(len(entries), previous)


def verify(experiment: str, entries: Iterable[Entry]) -> ChainCheck:
    """Re-hash an experiment's entries (oldest first) and name every place the chain breaks."""
    entries = list(entries)
    check = ChainCheck(experiment, Head(0, GENESIS))
    previous, previous_id, chained = GENESIS, None, False
    for entry in entries:
        if entry.experiment != experiment:
            raise ValueError(f"entry #{entry.id} is of {entry.experiment!r}, not {experiment!r}")
        if entry.entry_hash is None:
            if chained:
                check.breaks.append(Break(entry.id, "has no hash but follows chained entries "
                                                    "(inserted without the platform?)"))
            else:
                check.legacy.append(entry.id)
            previous, previous_id = entry_hash(_values(entry, previous)), entry.id
            check.hashes.append(previous)
            continue
        chained = True
        if entry.prev_hash != previous:
            before = f"#{previous_id}" if previous_id is not None else "the chain's start"
            check.breaks.append(Break(entry.id, f"its previous hash {_short(entry.prev_hash)} is "
                                      f"not the hash of {before} ({_short(previous)}): an entry "
                                      "between them was removed, replaced or slipped in"))
        recomputed = entry_hash(_values(entry))
        if recomputed != entry.entry_hash:
            check.breaks.append(Break(entry.id, f"its content hashes to {_short(recomputed)}, "
                                      f"not to its recorded {_short(entry.entry_hash)}: the entry "
                                      "was changed after it was written"))
        previous, previous_id = entry.entry_hash, entry.id
        check.hashes.append(previous)
    check.head = Head(len(entries), previous)
    return check


def _short(digest: str | None) -> str:
    return digest[:16] if digest else "(none)"
