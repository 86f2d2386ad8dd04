"""The measurement contract as a Great Expectations 1.x suite, with Data Docs.

Two uses, one suite:

* on a **raw batch** (informative): which expectations fail and how often, for the run page;
* on the **validated rows** (the blocking contract check): after
  :func:`~heat_platform.data.validation.split_rows` every expectation must pass, so a failure
  here means a bug in the row rules, not bad data.

The suite: required columns exist and are floats; x, y, t, u not null (GX counts NaN as null,
and text that is not a number is null after parsing, see below); x, y, t inside the domain;
u inside the physical range when given, else finite; no duplicate ``(x, y, t)`` and, where a
sensor is given, no duplicate ``(sensor_id, t)``; at least ``min_rows`` rows; sigma > 0 where
given.

Boundary: GX has no polars backend, so a polars frame is converted to pandas with the
contract's own parsing (:func:`~heat_platform.data.contract.parsed_numeric`: CSV text becomes
floats, unparseable text becomes null). Missing columns stay missing and their expectations
fail with GX's exception info; any other GX error is reported as a failed result, never
raised, so dirty data cannot crash a check.

Cost (``bench/ingest.py``, 2 shared cores, load average ~3.5): importing GX takes 6-9 s
(done lazily, once per process: call :func:`import_gx` at worker start to pay it up front);
the suite plus its Data Docs take ~3.5 s on 1 million rows and ~25 s on 10 million (23 s of it
in GX, +0.7 GiB peak memory; 71 % of that batch's validation time). The polars row rules cover
every row in ~6 s at 10 million, so GX runs on at most ``max_rows`` rows (default 1,000,000):
larger frames are checked on a deterministic sample, every k-th row
(k = ceil(n / max_rows)), and the result says so. That keeps the GX cost per batch flat
(~3.5 s) up to the row limit of 20 million, where GX on every row would take ~50 s and
~1.5 GiB more. ``max_rows=None`` checks every row (10 million rows then validate in ~36 s, peak
2.8 GiB, still within the target). On a sample, the duplicate expectations only see duplicates
that both fall into the sample; the polars rules have already checked all rows.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from heat_platform.data.contract import CONTRACT_COLUMNS, NUMERIC_COLUMNS, parsed_numeric
from heat_platform.data.validation import ValidationRules, domain_bounds

DEFAULT_MAX_ROWS = 1_000_000
SUITE_NAME = "heat_measurements"
_FLOAT_TYPES = ["float64", "Float64", "float32", "Float32", "double", "float"]
_LARGEST_FLOAT = 1.7976931348623157e308
_MAX_PARTIAL = 5


@dataclass(frozen=True)
class ExpectationsResult:
    success: bool
    statistics: dict[str, Any]
    results: list[dict[str, Any]]
    docs_path: Path | None
    rows_total: int = 0
    rows_checked: int = 0
    sample: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for Dagster check metadata."""
        return {
            "success": self.success,
            "statistics": self.statistics,
            "results": self.results,
            "docs_path": str(self.docs_path) if self.docs_path else None,
            "rows_total": self.rows_total,
            "rows_checked": self.rows_checked,
            "sample": self.sample,
            "timings_s": self.timings_s,
        }


@functools.cache
def import_gx() -> Any:
    """Import great_expectations once per process (it takes several seconds)."""
    import great_expectations

    return great_expectations


def run_expectations(
    df: pl.DataFrame | Any,
    bounds: Any,
    rules: ValidationRules | None = None,
    *,
    docs_dir: str | Path | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    run_name: str | None = None,
) -> ExpectationsResult:
    """Run the measurement suite on ``df`` (polars or pandas). With ``docs_dir``, also build
    Data Docs there and return the index page in ``docs_path``. Never raises on bad data."""
    rules = rules or ValidationRules()
    bounds = domain_bounds(bounds)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    import_gx()
    timings["import"] = time.perf_counter() - start

    start = time.perf_counter()
    frame, rows_total, sample = _checked_rows(df, max_rows)
    pandas_frame = _to_pandas(frame)
    timings["convert"] = time.perf_counter() - start
    rows_checked = len(pandas_frame)

    try:
        start = time.perf_counter()
        validation = _validate(pandas_frame, bounds, rules, docs_dir, run_name)
        timings["validate_and_docs"] = time.perf_counter() - start
    except Exception as error:  # GX internals on data it did not expect: report, do not crash
        result = {
            "expectation": "suite",
            "column": None,
            "success": False,
            "unexpected_count": None,
            "exception": f"{type(error).__name__}: {error}",
        }
        return ExpectationsResult(
            success=False,
            statistics={
                "evaluated_expectations": 0,
                "successful_expectations": 0,
                "unsuccessful_expectations": 1,
                "success_percent": 0.0,
            },
            results=[result],
            docs_path=None,
            rows_total=rows_total,
            rows_checked=rows_checked,
            sample=sample,
            timings_s=timings,
        )

    results = [_result_dict(r) for r in validation.results]
    statistics = {k: _json_safe(v) for k, v in dict(validation.statistics).items()}
    docs_path = None
    if docs_dir is not None:
        index = Path(docs_dir) / "index.html"
        docs_path = index if index.exists() else None
    return ExpectationsResult(
        success=bool(validation.success),
        statistics=statistics,
        results=results,
        docs_path=docs_path,
        rows_total=rows_total,
        rows_checked=rows_checked,
        sample=sample,
        timings_s=timings,
    )


def build_suite(
    columns: list[str], bounds: dict[str, tuple[float, float]], rules: ValidationRules
) -> list[Any]:
    """The expectations for a frame with these columns (sigma and sensor_id ones only when
    the column is there)."""
    gxe = import_gx().expectations
    suite: list[Any] = []
    for column in ("x", "y", "t", "u"):
        suite.append(gxe.ExpectColumnToExist(column=column))
        suite.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=_FLOAT_TYPES))
        suite.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for column in ("x", "y", "t"):
        lo, hi = bounds[column]
        suite.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi))
    lo, hi = rules.temperature_range or (-_LARGEST_FLOAT, _LARGEST_FLOAT)
    suite.append(gxe.ExpectColumnValuesToBeBetween(column="u", min_value=lo, max_value=hi))
    suite.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["x", "y", "t"]))
    if "sensor_id" in columns:
        suite.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["sensor_id", "t"], ignore_row_if="any_value_is_missing"
            )
        )
    if "sigma" in columns:
        suite.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="sigma", min_value=0, max_value=_LARGEST_FLOAT, strict_min=True
            )
        )
    suite.append(gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows))
    return suite


# --- internals ---------------------------------------------------------------------------------


def _checked_rows(df: Any, max_rows: int | None) -> tuple[Any, int, str | None]:
    n = len(df)
    if max_rows is None or n <= max_rows:
        return df, n, None
    step = math.ceil(n / max_rows)
    frame = df.gather_every(step) if isinstance(df, pl.DataFrame) else df.iloc[::step]
    return frame, n, f"every {step}th row ({len(frame)} of {n} rows), starting with the first"


def _to_pandas(df: Any) -> Any:
    if not isinstance(df, pl.DataFrame):
        return df
    exprs = []
    for column in CONTRACT_COLUMNS:
        if column not in df.columns:
            continue
        if column in NUMERIC_COLUMNS:
            exprs.append(parsed_numeric(column, df.schema[column]).alias(column))
        else:
            exprs.append(pl.col(column).cast(pl.String))
    return df.select(exprs).to_pandas()


def _validate(
    frame: Any,
    bounds: dict[str, tuple[float, float]],
    rules: ValidationRules,
    docs_dir: str | Path | None,
    run_name: str | None,
) -> Any:
    gx = import_gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In-memory stores; no temp docs site (the default ephemeral context leaks one per call).
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    if docs_dir is not None:
        config.data_docs_sites = {
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_definition = (
        context.data_sources.add_pandas("measurements")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in build_suite(list(frame.columns), bounds, rules):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch_definition, suite=suite, name="contract")
    )
    run_id = RunIdentifier(run_name=run_name) if run_name else None
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": _MAX_PARTIAL}
    if docs_dir is None:
        return definition.run(
            batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id
        )
    from great_expectations.checkpoint import UpdateDataDocsAction

    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="contract_checkpoint",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format=result_format,
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    return next(iter(outcome.run_results.values()))


def _result_dict(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: _json_safe(v) for k, v in config.kwargs.items() if k not in ("batch_id",)}
    details = result.result or {}
    exception = None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        exception = info.get("exception_message") or "raised an exception"
    else:  # multi-metric form: {metric_id: {...}}
        for value in info.values():
            if isinstance(value, dict) and value.get("raised_exception"):
                exception = value.get("exception_message") or "raised an exception"
                break
    return {
        "expectation": config.type,
        "column": kwargs.get("column") or kwargs.get("column_list"),
        "kwargs": kwargs,
        "success": bool(result.success),
        "unexpected_count": _json_safe(details.get("unexpected_count")),
        "unexpected_percent": _json_safe(details.get("unexpected_percent")),
        "observed_value": _json_safe(details.get("observed_value")),
        "partial_unexpected": _json_safe(details.get("partial_unexpected_list", [])[:_MAX_PARTIAL]),
        "exception": exception,
    }


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        try:
            return _json_safe(value.item())
        except (ValueError, TypeError):
            pass
    return str(value)
