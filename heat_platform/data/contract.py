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
truncated Parquet, a Parquet footer that declares more data than the size limit (a
decompression bomb), a CSV whose structure is broken (a line with more fields than the header,
not UTF-8, a cell longer than the cell limit), header but no rows, missing/duplicated contract
columns, or a contract column of a type that cannot hold the value (a date, a list, numbers
stored as text in a Parquet file...). Everything else is decided row by row in
:mod:`heat_platform.data.validation`: CSV columns are read as text and numbers are parsed there
(``strict=False``), so one ``u = "abc"`` quarantines one row, not the file.

Messages name the file as the user dropped it (``name=``), not the content store's blob, which
:func:`read_batch` is usually handed.

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

#: Refusal thresholds for one batch. The byte limit is checked before the file is opened (and
#: before the landing copy is made, see :mod:`heat_platform.data.ingest`), and a Parquet footer
#: may not declare more uncompressed bytes than it either; the row limit is checked before the
#: file is loaded (Parquet: from the footer; CSV: a streaming count), because memory follows
#: rows, not bytes: validation peaks at about 190 bytes per row for Parquet and about 400 for
#: CSV (text is kept to show it as written), see ``bench/ingest.py``. So 20 million Parquet rows
#: stay under ~4 GiB; split bigger batches, or lower the limits.
DEFAULT_MAX_FILE_BYTES = 4 * 1024**3
DEFAULT_MAX_ROWS = 20_000_000
#: Uncompressed bytes a Parquet footer may declare: legitimate batches under the row limit
#: decompress to well under this, a decompression bomb declares far more.
DEFAULT_MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
#: Longest cell, in bytes: a number needs at most ~25 characters and a sensor name a few dozen;
#: a longer cell is no measurement, and its text would be copied into quarantine reasons and
#: the UI. CSV cells are measured while streaming through the file, before anything is parsed.
DEFAULT_MAX_CELL_BYTES = 1024

_PARQUET_MAGIC = b"PAR1"
_SCAN_CHUNK_BYTES = 4 * 1024 * 1024
# Byte order marks of the encodings a spreadsheet may save "Unicode text" in, longest first.
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))

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
    "cell_too_long",
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
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_cell_bytes: int = DEFAULT_MAX_CELL_BYTES,
    file_format: Literal["parquet", "csv"] | None = None,
    name: str | None = None,
) -> RawBatch:
    """Read one batch file, or raise :class:`BatchReadError` saying precisely why not.

    ``file_format`` overrides the extension (blobs in the content store keep theirs, so it is
    rarely needed); ``name`` is the file's name in messages (default: the path's), so a blob
    read from the store is reported under the name the user gave it. Only the contract columns
    are loaded, which keeps memory proportional to rows x 6 whatever else the file carries.
    """
    path = Path(path)
    name = name or path.name
    fmt = file_format or format_of(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise BatchReadError("unreadable", f"cannot stat '{name}': {error.strerror}") from error
    if size == 0:
        raise BatchReadError("zero_bytes", f"'{name}' is 0 bytes long (an empty file)")
    check_size(name, size, max_file_bytes)
    _check_magic(path, name, fmt, size)
    if fmt == "parquet":
        _check_parquet_footer(path, name, max_uncompressed_bytes, max_rows)
    else:
        _check_csv_cells(path, name, max_cell_bytes)

    lazy = _scan_csv(path) if fmt == "csv" else pl.scan_parquet(path)
    try:
        schema = lazy.collect_schema()
    except Exception as error:
        raise _translate(error, path, name, fmt) from error

    names = list(schema.names())
    source_types = {column: str(schema[column]) for column in names}
    _check_columns(names, fmt)
    present = [c for c in CONTRACT_COLUMNS if c in names]
    _check_types(schema, present, fmt)
    ignored = [n for n in names if n not in CONTRACT_COLUMNS]
    warnings = _ignored_column_warnings(ignored, present)

    if max_rows is not None and fmt == "csv":  # Parquet's count was read from its footer
        try:
            n_rows = lazy.select(pl.len()).collect().item()
        except Exception as error:
            raise _translate(error, path, name, fmt) from error
        _check_rows(name, n_rows, max_rows)

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
        raise _translate(error, path, name, fmt) from error
    if fmt == "parquet":
        _check_text_cells(frame, name, max_cell_bytes)

    if frame.height == 0:
        raise BatchReadError(
            "no_rows",
            f"'{name}' has the columns ({', '.join(names)}) but no data rows"
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


def check_size(name: str, size: int, max_file_bytes: int) -> None:
    """Refuse a file of ``size`` bytes above the limit (before anything copies or reads it)."""
    if size > max_file_bytes:
        raise BatchReadError(
            "too_large",
            f"'{name}' is {_human_bytes(size)}, above the limit of "
            f"{_human_bytes(max_file_bytes)} for one batch (max_file_bytes); "
            "split it into several batch files",
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


def _check_magic(path: Path, name: str, fmt: str, size: int) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
            if size >= 8:
                handle.seek(-4, os.SEEK_END)
                tail = handle.read(4)
            else:
                tail = b""
    except OSError as error:
        raise BatchReadError("unreadable", f"cannot read '{name}': {error.strerror}") from error
    if fmt == "csv":
        if head.startswith(_PARQUET_MAGIC):
            raise BatchReadError(
                "wrong_format", f"'{name}' is named .csv but is a Parquet file; rename it"
            )
        encoding = _wide_encoding(head)
        if encoding is not None:
            raise BatchReadError(
                "encoding",
                f"'{name}' is not UTF-8 (looks like {encoding}); save it as UTF-8 CSV "
                "(in a spreadsheet: 'CSV UTF-8', not 'Unicode text')",
            )
    if fmt == "parquet":
        if not head.startswith(_PARQUET_MAGIC):
            hint = " (it looks like text: is it a CSV?)" if _looks_like_text(head[:4]) else ""
            raise BatchReadError(
                "corrupt", f"'{name}' is not a Parquet file: it does not start with PAR1{hint}"
            )
        if tail != _PARQUET_MAGIC:
            raise BatchReadError(
                "corrupt",
                f"'{name}' is a truncated or corrupt Parquet file: it does not end with "
                "PAR1 (was it copied completely?)",
            )


def _wide_encoding(head: bytes) -> str | None:
    """"UTF-16" or "UTF-32" when the file starts like text in one of them (a byte order mark,
    or ASCII with a zero byte beside every character, which UTF-8 text never has), else None."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    head = head[: len(head) // 4 * 4]
    if len(head) < 8:
        return None
    for stride, encoding in ((4, "UTF-32"), (2, "UTF-16")):
        lanes = [head[i::stride] for i in range(stride)]
        text = [lane for lane in lanes if lane.count(0) < len(lane) // 2]
        if len(text) == 1 and all(lane.count(0) == len(lane) for lane in lanes if lane not in text):
            return encoding
    return None


def _check_parquet_footer(path: Path, name: str, max_uncompressed_bytes: int,
                          max_rows: int | None) -> None:
    """Refuse, from the footer alone, a Parquet file with too many rows or whose columns
    declare more uncompressed bytes than ``max_uncompressed_bytes``: a few kilobytes of zstd can
    declare gigabytes (a decompression bomb), and nothing of it has been decompressed yet."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except Exception as error:
        raise BatchReadError(
            "corrupt", f"'{name}' is a corrupt Parquet file (its footer cannot be read: "
            f"{_first_line(error)})") from error
    if max_rows is not None:
        _check_rows(name, metadata.num_rows, max_rows)
    declared = sum(metadata.row_group(i).column(j).total_uncompressed_size
                   for i in range(metadata.num_row_groups) for j in range(metadata.num_columns))
    if declared > max_uncompressed_bytes:
        raise BatchReadError(
            "too_large",
            f"'{name}' declares {_human_bytes(declared)} of uncompressed data in its footer "
            f"({_human_bytes(path.stat().st_size)} on disk), above the limit of "
            f"{_human_bytes(max_uncompressed_bytes)} for one batch (max_uncompressed_bytes): "
            "a decompression bomb, or a batch to split into several files",
        )


def _check_rows(name: str, n_rows: int, max_rows: int) -> None:
    if n_rows > max_rows:
        raise BatchReadError(
            "too_large",
            f"'{name}' has {n_rows:,} rows, above the limit of {max_rows:,} rows for one "
            "batch (max_rows); split it into several batch files",
        )


def _check_csv_cells(path: Path, name: str, max_cell_bytes: int) -> None:
    """Stream through a CSV, in fixed-size chunks, and refuse it at the first cell longer than
    ``max_cell_bytes`` (quoted cells may hold commas and line breaks), before any parser holds a
    whole cell in memory."""
    import numpy as np

    run = 0  # bytes of the current cell seen so far
    quoted = False  # inside a quoted cell at the end of the previous chunk
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK_BYTES):
            data = np.frombuffer(chunk, np.uint8)
            separator = (data == ord(",")) | (data == ord("\n"))
            quotes = data == ord('"')
            if quoted or quotes.any():
                # a byte is inside quotes when an odd number of quotes precede it ("" escapes
                # a quote and keeps the parity); separators there belong to the cell
                inside = (np.cumsum(quotes) + quoted) & 1
                separator &= inside == 0
                quoted = bool(inside[-1])
            cuts = np.flatnonzero(separator)
            if cuts.size == 0:
                longest, where = run + data.size, data.size
                run = longest
            else:
                cells = np.diff(cuts, prepend=-1) - 1  # lengths of the cells the cuts close
                cells[0] += run
                index = int(np.argmax(cells))
                longest, where = int(cells[index]), int(cuts[index])
                run = data.size - int(cuts[-1]) - 1
                if run > longest:
                    longest, where = run, data.size
            if longest > max_cell_bytes:
                line += int(np.count_nonzero(data[:where] == ord("\n")))
                raise BatchReadError(
                    "cell_too_long",
                    f"'{name}' has a cell of more than {max_cell_bytes:,} bytes on line {line} "
                    f"(at least {longest:,}); cells hold one number or one sensor name "
                    "(max_cell_bytes)",
                )
            line += int(np.count_nonzero(data == ord("\n")))


def _check_text_cells(frame: pl.DataFrame, name: str, max_cell_bytes: int) -> None:
    """Refuse text cells longer than ``max_cell_bytes`` in a loaded Parquet batch (its text
    columns share their dictionary's buffers, so loading them cost nothing yet)."""
    for column in frame.columns:
        if frame.schema[column] != pl.String:
            continue
        longest = frame.get_column(column).str.len_bytes().max()
        if longest is not None and longest > max_cell_bytes:
            row = int(frame.select(pl.col(column).str.len_bytes().arg_max()).item()) + 1
            raise BatchReadError(
                "cell_too_long",
                f"'{name}' has a '{column}' of {longest:,} bytes in row {row}, above the limit of "
                f"{max_cell_bytes:,} (max_cell_bytes)",
            )


def _looks_like_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _translate(error: Exception, path: Path, name: str, fmt: str) -> BatchReadError:
    """Map polars' exceptions to a kind and a sentence for the user."""
    text = str(error)
    first_line = _first_line(error)
    if isinstance(error, pl.exceptions.NoDataError):
        return BatchReadError("empty", f"'{name}' is empty: no header and no rows")
    if isinstance(error, OSError):
        return BatchReadError("unreadable", f"cannot read '{name}': {first_line}")
    if fmt == "parquet":
        return BatchReadError("corrupt", f"'{name}' is a corrupt Parquet file ({first_line})")
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return BatchReadError(
            "encoding", f"'{name}' is not UTF-8 text; save it as UTF-8 CSV ({first_line})"
        )
    if "more fields" in text or "ragged" in text:
        return BatchReadError("malformed_csv", _ragged_line_message(path, name))
    return BatchReadError("malformed_csv", f"'{name}' cannot be parsed as CSV ({first_line})")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _ragged_line_message(path: Path, name: str) -> str:
    """Find the first line with more fields than the header (only on the error path)."""
    import csv

    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for record in reader:
            if len(record) > len(header):
                return (
                    f"'{name}' line {reader.line_num} has {len(record)} fields but the "
                    f"header has {len(header)} (an unquoted decimal comma?)"
                )
    return f"'{name}' has a line with more fields than the header"


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


def _check_types(schema: pl.Schema, present: list[str], fmt: str) -> None:
    problems = []
    for column in present:
        dtype = schema[column]
        if column == "sensor_id":
            ok = dtype.is_integer() or isinstance(
                dtype, pl.String | pl.Categorical | pl.Enum | pl.Null
            )
            if not ok:
                problems.append(f"'sensor_id' is {dtype} (must be text or an integer)")
        elif isinstance(dtype, pl.String) and fmt == "parquet":
            # A CSV has only text, so its numbers are parsed row by row; a Parquet writer chose
            # text for numbers, and its cells could hold anything of any length.
            problems.append(f"'{column}' is String in a Parquet file (store numbers as numbers)")
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
