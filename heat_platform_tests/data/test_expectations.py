"""The Great Expectations suite: passes on clean data, fails with counts on dirty data, never
crashes, writes Data Docs. GX is imported once for the whole session (it takes seconds)."""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
import pytest

from heat_platform.data.expectations import import_gx, run_expectations
from heat_platform.data.validation import ValidationRules, split_rows
from heat_platform_tests.data.conftest import BOUNDS, clean_frame

RULES = ValidationRules(temperature_range=(0.0, 100.0), min_rows=10)


@pytest.fixture(scope="session", autouse=True)
def gx_imported():
    import_gx()


def failures(result) -> dict[tuple[str, str | None], int | None]:
    return {
        (r["expectation"], json.dumps(r["column"])): r["unexpected_count"] for r in result.failed
    }


@pytest.fixture(scope="module")
def dirty() -> pl.DataFrame:
    """A raw CSV-like batch (all text) with one problem per row in rows 1-5 and a conflicting
    duplicate of row 11 appended."""
    frame = clean_frame(40).with_columns(pl.all().cast(pl.String))
    edits = {0: ("u", "abc"), 1: ("x", "NaN"), 2: ("x", "7.5"), 3: ("sigma", "-1"), 4: ("u", "500")}
    rows = frame.to_dicts()
    for index, (column, value) in edits.items():
        rows[index][column] = value
    rows.append({**rows[10], "u": "99"})
    return pl.DataFrame(rows, schema=frame.schema)


def test_clean_validated_rows_pass_and_data_docs_are_written(tmp_path):
    valid = split_rows(clean_frame(40), BOUNDS, RULES).valid
    result = run_expectations(valid, BOUNDS, RULES, docs_dir=tmp_path / "docs", run_name="exp1|b1")
    assert result.success, result.failed
    assert result.statistics["evaluated_expectations"] == 20
    assert result.statistics["unsuccessful_expectations"] == 0
    assert result.docs_path == tmp_path / "docs" / "index.html"
    assert "<html" in result.docs_path.read_text().lower()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))
    json.dumps(result.to_dict())  # goes into Dagster metadata as is


def test_dirty_raw_batch_fails_with_counts(dirty):
    result = run_expectations(dirty, BOUNDS, RULES)
    assert not result.success
    assert failures(result) == {
        ("expect_column_values_to_not_be_null", '"x"'): 1,  # NaN counts as null in GX
        ("expect_column_values_to_not_be_null", '"u"'): 1,  # 'abc' does not parse
        ("expect_column_values_to_be_between", '"x"'): 1,
        ("expect_column_values_to_be_between", '"u"'): 1,
        ("expect_column_values_to_be_between", '"sigma"'): 1,
        ("expect_compound_columns_to_be_unique", '["x", "y", "t"]'): 2,
        ("expect_compound_columns_to_be_unique", '["sensor_id", "t"]'): 2,
    }
    assert result.docs_path is None


def test_missing_columns_and_junk_are_reported_not_raised():
    missing = run_expectations(clean_frame(20).drop("y", "sigma"), BOUNDS, RULES)
    assert not missing.success
    failed = {(r["expectation"], json.dumps(r["column"])) for r in missing.failed}
    assert ("expect_column_to_exist", '"y"') in failed
    assert any(r["exception"] and "y" in r["exception"] for r in missing.failed)

    junk = run_expectations(pd.DataFrame({"x": [1, "a"], "u": [None, object()]}), BOUNDS, RULES)
    assert not junk.success and junk.failed


def test_large_frames_are_checked_on_a_deterministic_sample():
    frame = clean_frame(100)
    result = run_expectations(frame, BOUNDS, RULES, max_rows=30)
    assert result.rows_total == 100 and result.rows_checked == 25
    assert result.sample == "every 4th row (25 of 100 rows), starting with the first"
    assert result.success
