"""Stage 2, validation: every row is either valid or quarantined with its reason.

One step produces both outputs of a batch: ``validated_measurements`` (the rows that passed the
row rules) and ``quarantined_measurements`` (the others, each with a reason). Two blocking
checks guard the validated rows: the share of quarantined rows (and the minimum row count), and
the Great Expectations contract, whose Data Docs are linked from the check. When either fails
the run fails with the reason, nothing downstream runs, and the catalog marks the version
rejected so later training sets leave it out instead of using an older version. Quarantined rows
are shown as a table of data, never as Markdown: a cell holding ``![](http://...)`` or ``|`` is
text in the UI.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from heat_platform.assets.partitions import (
    by_experiment,
    experiment_and_batch,
    experiment_batches,
    partitioned_check,
)
from heat_platform.data.ingest import current_spec, validate_batch
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage

QUARANTINE_SHARE = "quarantine_share_within_limit"
EXPECTATIONS = "great_expectations_contract"


class ValidationConfig(dg.Config):
    max_quarantine_share: float = Field(
        default=0.1, description="Fail the batch when more than this share of rows is quarantined.")
    min_rows: int = Field(default=10, description="Fail the batch with fewer valid rows than this.")
    temperature_range: list[float] | None = Field(
        default=None, description="Physical range [lo, hi] of u; default: the problem.yaml's.")
    gx_max_rows: int | None = Field(
        default=1_000_000, description="Rows Great Expectations checks (an even sample of larger "
        "batches; the polars row rules always see every row). None: all rows.")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "validated_measurements",
            deps=["raw_measurements", dg.AssetDep("problem_spec", partition_mapping=by_experiment)],
            description="The rows of a batch that passed every rule (x, y, t, u, sigma, sensor_id).",
            group_name="validation", kinds={"polars", "great_expectations"},
            owners=["team:heat-platform"], skippable=True,
        ),
        dg.AssetSpec(
            "quarantined_measurements",
            deps=["raw_measurements"],
            description="The rows of a batch that failed a rule, each with its reason and row number.",
            group_name="validation", kinds={"polars"}, owners=["team:heat-platform"],
        ),
    ],
    check_specs=[
        partitioned_check(QUARANTINE_SHARE, "validated_measurements",
                    "At most the configured share of rows is quarantined and enough valid rows "
                    "remain."),
        partitioned_check(EXPECTATIONS, "validated_measurements",
                    "Great Expectations suite: columns and types, non-null and finite values, "
                    "domain, physical range, no duplicates, sigma > 0."),
    ],
    partitions_def=experiment_batches,
)
def batch_validation(context: dg.AssetExecutionContext, config: ValidationConfig,
                     storage: PlatformStorage, mlflow: MlflowTracking) -> Iterator:
    experiment, batch = experiment_and_batch(context)
    catalog = storage.catalog()
    _, spec = current_spec(catalog, experiment)
    overrides = {"temperature_range": tuple(config.temperature_range)} if config.temperature_range else {}
    rules = storage.rules(spec, max_quarantine_share=config.max_quarantine_share,
                          min_rows=config.min_rows, **overrides)
    version = catalog.current_version(experiment, batch)
    result = validate_batch(
        storage.store(), catalog, experiment, batch, spec, rules,
        docs_dir=storage.report_dir("data_docs", experiment, batch, version.sha256[:16]),
        gx_max_rows=config.gx_max_rows, run_id=context.run_id,
    )
    summary = result.split.summary if result.split is not None else {}
    quarantined = result.split.quarantined if result.split is not None else None
    yield dg.MaterializeResult(
        asset_key="quarantined_measurements",
        metadata={
            "dagster/row_count": result.n_quarantined,
            "reasons": dg.MetadataValue.json(summary.get("reasons", {})
                                             or {"file": str(result.read_error)}),
            "examples": _quarantine_table(quarantined),
            "stored rows": dg.MetadataValue.path(str(result.quarantine.path)),
            "batch sha256": result.version.sha256,
        },
        data_version=dg.DataVersion(result.quarantine.sha256),
    )
    if result.valid is not None:
        yield dg.MaterializeResult(
            asset_key="validated_measurements",
            metadata={
                "dagster/row_count": summary["n_valid"],
                "quarantine share": float(summary["quarantine_share"]),
                "stored rows": dg.MetadataValue.path(str(result.valid.path)),
                "batch sha256": result.version.sha256,
                "status": result.version.status,
                "rules": dg.MetadataValue.json(rules.to_dict()),
            },
            data_version=dg.DataVersion(result.valid.sha256),
        )

    yield dg.AssetCheckResult(
        asset_key="validated_measurements",
        check_name=QUARANTINE_SHARE,
        passed=result.split is not None and result.split.passed,
        description="; ".join(result.problems[:1]) or None,
        metadata={"quarantine share": float(summary.get("quarantine_share", 1.0)),
                  "max share": rules.max_quarantine_share,
                  "valid rows": int(summary.get("n_valid", 0)), "min rows": rules.min_rows,
                  "problems": dg.MetadataValue.json(result.problems)},
    )
    expectations = result.expectations
    check_metadata = {"rows checked": expectations.rows_checked if expectations else 0}
    if expectations is not None:
        check_metadata["statistics"] = dg.MetadataValue.json(expectations.statistics)
        check_metadata["failed expectations"] = dg.MetadataValue.json(
            [{k: r.get(k) for k in ("expectation", "column", "unexpected_count")}
             for r in expectations.failed])
        if expectations.sample:
            check_metadata["sample"] = expectations.sample
        if expectations.docs_path is not None:
            check_metadata.update(_data_docs_links(context, mlflow, experiment,
                                                   expectations.docs_path))
    yield dg.AssetCheckResult(
        asset_key="validated_measurements",
        check_name=EXPECTATIONS,
        passed=expectations is not None and expectations.success,
        description=None if expectations is not None else "not run: the file cannot be read",
        metadata=check_metadata,
    )


def _quarantine_table(quarantined) -> dg.TableMetadataValue:
    """The first quarantined rows as a table of values (the UI shows them as text)."""
    rows = quarantined.head(10).to_dicts() if quarantined is not None else []
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"row": r["row"], "reason": r["reason"]}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn("row", "int"),
                                       dg.TableColumn("reason", "string")]))


def _data_docs_links(context: dg.AssetExecutionContext, mlflow: MlflowTracking, experiment: str,
                     index: Path) -> dict[str, dg.MetadataValue]:
    """The batch's Data Docs pages logged to MLflow, linked over HTTP (the validation page)."""
    docs = index.parent
    # the pages and their style sheets; GX's fonts and images (4 MB a site) stay local
    files = sorted(docs.rglob("*.html")) + sorted((docs / "static" / "styles").glob("*.css"))
    page = next((f for f in files if "validations" in f.relative_to(docs).parts), index)
    return mlflow.report_links(context, experiment, "data_docs", docs, files, page)
