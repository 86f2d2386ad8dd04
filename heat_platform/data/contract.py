"""The measurement contract, and reading one batch file against it.

The contract
------------
One batch = one file, Parquet (``.parquet``) or CSV (``.csv``, UTF-8, comma-separated, one header
line), dropped at ``<landing>/<experiment>/<batch>.parquet|csv`` next to the experiment's
``problem.yaml``. Column names are exact and case-sensitive:

==============  ========  ========================================================
column          required  meaning
==============  ========  ========================================================
``x``, ``y``    yes       sensor position (float, inside the problem's domain)
``t``           yes       time of the measurement (float, inside the domain)
``u``           yes       measured temperature (float, inside the physical range)
``sigma``       no        the measurement's noise standard deviation (float > 0)
``sensor_id``   no        which sensor took it (text or integer)
==============  ========  ========================================================

Other columns are allowed: they stay in the stored file but are not used, and
:attr:`RawBatch.warnings` names them (with a hint when one looks like a misspelt contract
column, e.g. ``temp`` for ``u``), so nothing is ignored silently.

What is a file problem and what is a row problem
------------------------------------------------
:func:`read_batch` refuses a whole file, with a :class:`BatchReadError` whose ``kind`` says
why, only when no row of it can be trusted: 0 bytes, empty, over the size limit, corrupt or
truncated Parquet, a CSV whose structure is broken (a line with more fields than the header, not
UTF-8), header but no rows, missing/duplicated contract columns, or a contract column of a
type that cannot hold the value (a date, a list...). Everything else is decided row by row in
:mod:`heat_platform.data.validation`: CSV columns are read as text and numbers are parsed there
(``strict=False``), so one ``u = "abc"`` quarantines one row, not the file.

Row numbers
-----------
``row`` is the 1-based position of the row among the file's data rows (the header is not
counted): in a CSV, data row ``row`` is on line ``row + 1``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

REQUIRED_COLUMNS: tuple[str, ...] = ("x", "y", "t", "u")
OPTIONAL_COLUMNS: tuple[str, ...] = ("sigma", "sensor_id")
CONTRACT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
NUMERIC_COLUMNS: tuple[str, ...] = ("x", "y", "t", "u", "sigma")
ROW_COLUMN = "row"

FORMATS: dict[str, Literal["parquet", "csv"]] = {".parquet": "parquet", ".csv": "csv"}

#: Refusal thresholds for one batch. The byte limit is checked before the file is opened; the
#: row limit before it is loaded (Parquet: from the footer; CSV: a streaming count), because
#: memory follows rows, not bytes: validation peaks at about 190 bytes per row for Parquet and
#: about 400 for CSV (text is kept to show it as written), see ``bench/ingest.py``. So 20
#: million Parquet rows stay under ~4 GiB; split bigger batches, or lower the limits.
DEFAULT_MAX_FILE_BYTES = 4 * 1024**3
DEFAULT_MAX_ROWS = 20_000_000

_PARQUET_MAGIC = b"PAR1"

# Names labs actually use for the contract columns; compared after lower-casing and dropping
# everything that is not a letter or digit. difflib alone cannot map "temp" to "u".
_ALIASES: dict[str, set[str]] = {
    "x": {"xpos", "posx", "xcoord", "xm", "positionx"},
    "y": {"ypos", "posy", "ycoord", "ym", "positiony"},
    "t": {"time", "times", "ts", "timestamp", "tsec"},
    "u": {
        "temp",
        "temperature",
        "temperatures",
        "tempc",
        "temperaturec",
        "theta",
        "value",
        "uobs",
        "measurement",
        "reading",
    },
    "sigma": {
        "std",
        "stdev",
        "stddev",
        "sd",
        "noise",
        "error",
        "err",
        "uncertainty",
        "uerr",
        "sigmau",
        "noisesigma",
    },
    "sensor_id": {"sensor", "sensorid", "sensorname", "probe", "probeid", "id", "station"},
}

_DUPLICATED_SUFFIX = re.compile(r"^(?P<name>.+)_duplicated_\d+$")

ErrorKind = Literal[
    "zero_bytes",
    "empty",
    "too_large",
    "unreadable",
    "unsupported_format",
    "wrong_format",
    "corrupt",
    "encoding",
    "malformed_csv",
    "no_rows",
    "columns",
    "column_type",
]


class BatchReadError(Exception):
    """A batch file that cannot be read at all. ``kind`` is stable (for code and metrics),
    ``message`` is for the person who dropped the file."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class RawBatch:
    """One batch as read, before any row rule.

    ``frame`` holds ``row`` (Int64) and the contract columns that the file has, in their stored
    types except that a categorical ``sensor_id`` becomes text; CSV columns are all text.
    """

    frame: pl.DataFrame
    format: Literal["parquet", "csv"]
    size_bytes: int
    source_types: dict[str, str]
    ignored_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return self.frame.height

    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the file, for run metadata and the catalog message."""
        return {
            "format": self.format,
            "size_bytes": self.size_bytes,
            "n_rows": self.n_rows,
            "source_types": self.source_types,
            "ignored_columns": self.ignored_columns,
            "warnings": self.warnings,
        }


def format_of(path: str | os.PathLike[str]) -> Literal["parquet", "csv"]:
    """The batch format from the file name's extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise BatchReadError(
            "unsupported_format",
            f"'{Path(path).name}' has extension '{suffix}'; batches must be .parquet or .csv",
        )
    return FORMATS[suffix]


def read_batch(
    path: str | os.PathLike[str],
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    file_format: Literal["parquet", "csv"] | None = None,
) -> RawBatch:
    """Read one batch file, or raise :class:`BatchReadError` saying precisely why not.

    ``file_format`` overrides the extension (blobs in the content store keep theirs, so it is
    rarely needed). Only the contract columns are loaded, which keeps memory proportional to
    rows x 6 whatever else the file carries.
    """
    path = Path(path)
    fmt = file_format or format_of(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise BatchReadError(
            "unreadable", f"cannot stat '{path.name}': {error.strerror}"
        ) from error
    if size == 0:
        raise BatchReadError("zero_bytes", f"'{path.name}' is 0 bytes long (an empty file)")
    if size > max_file_bytes:
        raise BatchReadError(
            "too_large",
            f"'{path.name}' is {_human_bytes(size)}, above the limit of "
            f"{_human_bytes(max_file_bytes)} for one batch (max_file_bytes); "
            "split it into several batch files",
        )
    _check_magic(path, fmt, size)

    lazy = _scan_csv(path) if fmt == "csv" else pl.scan_parquet(path)
    try:
        schema = lazy.collect_schema()
    except Exception as error:
        raise _translate(error, path, fmt) from error

    names = list(schema.names())
    source_types = {name: str(schema[name]) for name in names}
    _check_columns(names, fmt)
    present = [c for c in CONTRACT_COLUMNS if c in names]
    _check_types(schema, present)
    ignored = [n for n in names if n not in CONTRACT_COLUMNS]
    warnings = _ignored_column_warnings(ignored, present)

    if max_rows is not None:
        try:
            n_rows = lazy.select(pl.len()).collect().item()
        except Exception as error:
            raise _translate(error, path, fmt) from error
        if n_rows > max_rows:
            raise BatchReadError(
                "too_large",
                f"'{path.name}' has {n_rows:,} rows, above the limit of {max_rows:,} rows for one "
                "batch (max_rows); split it into several batch files",
            )

    selected = [pl.col(c) for c in present]
    if "sensor_id" in present and isinstance(schema["sensor_id"], pl.Categorical | pl.Enum):
        selected[present.index("sensor_id")] = pl.col("sensor_id").cast(pl.String)
    try:
        frame = (
            lazy.select(selected)
            .with_row_index(ROW_COLUMN, offset=1)
            .with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
            .collect()
        )
    except Exception as error:
        raise _translate(error, path, fmt) from error

    if frame.height == 0:
        raise BatchReadError(
            "no_rows",
            f"'{path.name}' has the columns ({', '.join(names)}) but no data rows"
            + (" (a CSV with a header only)" if fmt == "csv" else ""),
        )
    return RawBatch(
        frame=frame,
        format=fmt,
        size_bytes=size,
        source_types=source_types,
        ignored_columns=ignored,
        warnings=warnings,
    )


def parsed_numeric(column: str, dtype: pl.DataType) -> pl.Expr:
    """The column as Float64: numbers are cast, text is parsed (surrounding blanks allowed);
    text that is not a number becomes null. The one parsing rule used by the row rules and at
    the Great Expectations boundary."""
    if dtype == pl.String:
        return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.col(column).cast(pl.Float64, strict=False)


def suggest_column(missing: str, candidates: list[str]) -> str | None:
    """The found column that most likely means ``missing`` (``temp`` for ``u``), if any."""
    for name in candidates:
        if name.strip().lower() == missing:
            return name
    for name in candidates:
        if _squash(name) in _ALIASES.get(missing, set()):
            return name
    close = difflib.get_close_matches(missing, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


# --- internals ---------------------------------------------------------------------------------


def _scan_csv(path: Path) -> pl.LazyFrame:
    # Everything as text: a bad value must cost one row, not the file (see the module docstring).
    return pl.scan_csv(path, infer_schema=False, has_header=True, encoding="utf8")


def _check_magic(path: Path, fmt: str, size: int) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
            if size >= 8:
                handle.seek(-4, os.SEEK_END)
                tail = handle.read(4)
            else:
                tail = b""
    except OSError as error:
        raise BatchReadError(
            "unreadable", f"cannot read '{path.name}': {error.strerror}"
        ) from error
    if fmt == "csv" and head == _PARQUET_MAGIC:
        raise BatchReadError(
            "wrong_format", f"'{path.name}' is named .csv but is a Parquet file; rename it"
        )
    if fmt == "parquet":
        if head != _PARQUET_MAGIC:
            hint = " (it looks like text: is it a CSV?)" if _looks_like_text(head) else ""
            raise BatchReadError(
                "corrupt", f"'{path.name}' is not a Parquet file: it does not start with PAR1{hint}"
            )
        if tail != _PARQUET_MAGIC:
            raise BatchReadError(
                "corrupt",
                f"'{path.name}' is a truncated or corrupt Parquet file: it does not end with "
                "PAR1 (was it copied completely?)",
            )


def _looks_like_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _translate(error: Exception, path: Path, fmt: str) -> BatchReadError:
    """Map polars' exceptions to a kind and a sentence for the user."""
    text = str(error)
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if isinstance(error, pl.exceptions.NoDataError):
        return BatchReadError("empty", f"'{path.name}' is empty: no header and no rows")
    if isinstance(error, OSError):
        return BatchReadError("unreadable", f"cannot read '{path.name}': {first_line}")
    if fmt == "parquet":
        return BatchReadError("corrupt", f"'{path.name}' is a corrupt Parquet file ({first_line})")
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return BatchReadError(
            "encoding", f"'{path.name}' is not UTF-8 text; save it as UTF-8 CSV ({first_line})"
        )
    if "more fields" in text or "ragged" in text:
        return BatchReadError("malformed_csv", _ragged_line_message(path))
    return BatchReadError("malformed_csv", f"'{path.name}' cannot be parsed as CSV ({first_line})")


def _ragged_line_message(path: Path) -> str:
    """Find the first line with more fields than the header (only on the error path)."""
    import csv

    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for record in reader:
            if len(record) > len(header):
                return (
                    f"'{path.name}' line {reader.line_num} has {len(record)} fields but the "
                    f"header has {len(header)} (an unquoted decimal comma?)"
                )
    return f"'{path.name}' has a line with more fields than the header"


def _check_columns(names: list[str], fmt: str) -> None:
    # polars renames a repeated CSV header name to "<name>_duplicated_<i>".
    duplicated = sorted(
        {m["name"] for n in names if (m := _DUPLICATED_SUFFIX.match(n)) and m["name"] in names}
        | {n for n in names if names.count(n) > 1}
    )
    if duplicated:
        raise BatchReadError(
            "columns", f"column name(s) {_quoted(duplicated)} appear more than once in the header"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if not missing:
        return
    extras = [n for n in names if n not in CONTRACT_COLUMNS]
    hints = []
    for column in missing:
        guess = suggest_column(column, extras)
        if guess is not None:
            hints.append(f"'{guess}' -> '{column}'")
    message = f"missing required column(s) {_quoted(missing)}; found {_quoted(names)}"
    if hints:
        message += f"; did you mean to rename {', '.join(hints)}?"
    message += (
        f" (required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)};"
        " names are case-sensitive)"
    )
    if fmt == "csv" and len(names) == 1 and any(sep in names[0] for sep in ";\t"):
        message += "; the header looks ';' or tab separated: batches must be comma-separated"
    raise BatchReadError("columns", message)


def _check_types(schema: pl.Schema, present: list[str]) -> None:
    problems = []
    for column in present:
        dtype = schema[column]
        if column == "sensor_id":
            ok = dtype.is_integer() or isinstance(
                dtype, pl.String | pl.Categorical | pl.Enum | pl.Null
            )
            if not ok:
                problems.append(f"'sensor_id' is {dtype} (must be text or an integer)")
        else:
            ok = dtype.is_numeric() or isinstance(dtype, pl.String | pl.Null)
            if not ok:
                problems.append(f"'{column}' is {dtype} (must be a number)")
    if problems:
        raise BatchReadError("column_type", "unusable column type: " + "; ".join(problems))


def _ignored_column_warnings(ignored: list[str], present: list[str]) -> list[str]:
    warnings = []
    for name in ignored:
        absent = [c for c in CONTRACT_COLUMNS if c not in present]
        guesses = [c for c in absent if suggest_column(c, [name]) == name]
        hint = f" (did you mean '{guesses[0]}'?)" if guesses else ""
        warnings.append(f"column '{name}' is not part of the contract and is not used{hint}")
    return warnings


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
