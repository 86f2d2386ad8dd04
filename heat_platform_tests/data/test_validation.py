"""split_rows: each bad row is quarantined with its original values, row number and reason."""

from __future__ import annotations

import polars as pl
import pytest

from heat_platform.data.contract import read_batch
from heat_platform.data.validation import ValidationRules, domain_bounds, split_rows
from heat_platform_tests.data.conftest import clean_frame


def reasons(split) -> dict[int, str]:
    return dict(split.quarantined.select("row", "reason").iter_rows())


def csv_split(write_text, body: str, bounds, rules=None):
    raw = read_batch(write_text("b.csv", "x,y,t,u,sigma,sensor_id\n" + body))
    return split_rows(raw.frame, bounds, rules or ValidationRules(min_rows=1))


def test_clean_batch_passes_with_the_documented_schema(bounds):
    split = split_rows(clean_frame(40), bounds)
    assert split.quarantined.height == 0
    assert split.valid.columns == ["x", "y", "t", "u", "sigma", "sensor_id", "row"]
    assert split.valid.schema["u"] == pl.Float64 and split.valid.schema["sensor_id"] == pl.String
    assert split.summary["passed"] and split.summary["quarantine_share"] == 0.0


def test_every_row_is_either_valid_or_quarantined(bounds):
    frame = clean_frame(40).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(5.0).otherwise(pl.col("x")).alias("x")
    )
    split = split_rows(frame, bounds)
    rows = sorted(split.valid["row"].to_list() + split.quarantined["row"].to_list())
    assert rows == list(range(1, 41))


def test_strings_in_numeric_columns_quarantine_the_row_only(write_text, bounds):
    body = "0.1,0.2,1,abc,0.1,a\n0.1,0.2,2,1.5,0.1,a\n0.3,0.2,3,20,0.1,b\n"
    split = csv_split(write_text, body, bounds)
    assert reasons(split) == {1: "u is not a number ('abc')"}
    assert split.quarantined.filter(pl.col("row") == 1)["u"].item() == "abc"
    assert split.valid["row"].to_list() == [2, 3]


def test_decimal_comma_is_shown_as_written(write_text, bounds):
    split = csv_split(write_text, '"0,5",0.2,1,20,0.1,a\n0.3,0.2,1,20,0.1,b\n', bounds)
    assert reasons(split) == {1: "x is not a number ('0,5')"}
    assert split.quarantined["x"].item() == "0,5"


def test_null_nan_and_inf(write_text, bounds):
    body = (
        "0.1,0.2,1,,0.1,a\n"  # 1: u missing
        "0.1,0.2,2,NaN,0.1,a\n"  # 2: u NaN
        "inf,0.2,3,20,0.1,a\n"  # 3: x inf
        "0.1,0.2,-inf,20,0.1,a\n"  # 4: t -inf
        ",,,,,\n"  # 5: empty row
        "0.1,0.2,6,20,0.1,a\n"  # 6: fine
    )
    split = csv_split(write_text, body, bounds)
    assert reasons(split) == {
        1: "u is null",
        2: "u is not finite (NaN)",
        3: "x is not finite (inf)",
        4: "t is not finite (-inf)",
        5: "empty row",
    }
    assert split.summary["reasons"] == {
        "empty_row": 1,
        "null:u": 1,
        "non_finite:x": 1,
        "non_finite:t": 1,
        "non_finite:u": 1,
    }


def test_nan_and_inf_in_parquet_floats(bounds):
    frame = clean_frame(12).with_columns(pl.Series("u", [float("nan"), float("inf")] + [20.0] * 10))
    split = split_rows(frame, bounds, ValidationRules(min_rows=1))
    assert reasons(split) == {1: "u is not finite (NaN)", 2: "u is not finite (inf)"}
    assert split.quarantined["u"].to_list() == ["NaN", "inf"]


def test_points_outside_the_domain_and_range(write_text, bounds):
    body = "1.5,0.2,1,20,0.1,a\n0.1,-0.1,11,20,0.1,b\n0.1,0.2,3,500,0.1,c\n0.0,2.0,10,20,0.1,d\n"
    split = csv_split(
        write_text, body, bounds, ValidationRules(temperature_range=(-50, 200), min_rows=1)
    )
    assert reasons(split) == {
        1: "x = 1.5 is outside the domain [0.0, 1.0]",
        2: "y = -0.1 is outside the domain [0.0, 2.0]; t = 11.0 is outside the domain [0.0, 10.0]",
        3: "u = 500.0 is outside the physical range [-50, 200]",
    }
    assert split.valid["row"].to_list() == [4]  # bounds are inclusive


def test_sigma_must_be_positive_and_finite(write_text, bounds):
    body = "0.1,0.2,1,20,0,a\n0.1,0.2,2,20,-0.5,a\n0.1,0.2,3,20,nan,a\n0.1,0.2,4,20,,a\n0.1,0.2,5,20,x,a\n"
    split = csv_split(write_text, body, bounds)
    assert reasons(split) == {
        1: "sigma = 0.0 is not a positive finite number",
        2: "sigma = -0.5 is not a positive finite number",
        3: "sigma = NaN is not a positive finite number",
        5: "sigma is not a number ('x')",
    }
    assert split.valid["row"].to_list() == [4]  # null sigma means "not given"
    assert split.valid["sigma"].to_list() == [None]


def test_exact_duplicates_keep_the_first(write_text, bounds):
    body = "0.1,0.2,1,20,0.1,a\n0.3,0.2,1,21,0.1,b\n0.1,0.2,1,20,0.1,a\n0.1,0.2,1,20,0.1,a\n"
    split = csv_split(write_text, body, bounds)
    assert reasons(split) == {3: "exact duplicate of row 1", 4: "exact duplicate of row 1"}
    assert split.valid["row"].to_list() == [1, 2]
    assert split.summary["reasons"] == {"exact_duplicate": 2}


def test_conflicting_duplicates_quarantine_all(write_text, bounds):
    body = (
        "0.1,0.2,1,20,0.1,a\n"  # 1 \ same (x, y, t), different u
        "0.1,0.2,1,25,0.1,b\n"  # 2 /
        "0.5,0.5,2,20,0.1,c\n"  # 3 \ same (sensor_id, t), different place
        "0.6,0.6,2,20,0.1,c\n"  # 4 /
        "0.7,0.7,3,20,0.1,d\n"  # 5 fine
    )
    split = csv_split(write_text, body, bounds)
    assert reasons(split) == {
        1: "conflicting duplicate: rows 1, 2 have the same (x, y, t) but different values",
        2: "conflicting duplicate: rows 1, 2 have the same (x, y, t) but different values",
        3: "conflicting duplicate: rows 3, 4 have the same (sensor_id, t) but different values",
        4: "conflicting duplicate: rows 3, 4 have the same (sensor_id, t) but different values",
    }
    assert split.valid["row"].to_list() == [5]


def test_a_bad_row_does_not_make_a_good_row_a_duplicate(write_text, bounds):
    split = csv_split(write_text, "0.1,0.2,1,20,0.1,a\n0.1,0.2,1,abc,0.1,a\n", bounds)
    assert reasons(split) == {2: "u is not a number ('abc')"}
    assert split.valid["row"].to_list() == [1]


def test_large_conflict_groups_are_summarised(bounds):
    frame = pl.DataFrame(
        {"x": [0.5] * 15, "y": [0.5] * 15, "t": [1.0] * 15, "u": [float(i) for i in range(15)]}
    )
    split = split_rows(frame, bounds, ValidationRules(min_rows=0, max_quarantine_share=1))
    assert split.quarantined["reason"][0] == (
        "conflicting duplicate: rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 5 more have the same "
        "(x, y, t) but different values"
    )


def test_quarantine_share_and_min_rows_decide_the_batch(bounds):
    frame = clean_frame(20).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(9.0).otherwise(pl.col("x")).alias("x")
    )
    split = split_rows(frame, bounds, ValidationRules(max_quarantine_share=0.1, min_rows=18))
    summary = split.summary
    assert summary["n_quarantined"] == 3 and summary["quarantine_share"] == pytest.approx(0.15)
    assert summary["quarantine_share_exceeded"] and not summary["min_rows_ok"]
    assert not summary["passed"]
    assert summary["problems"] == [
        "3 of 20 rows quarantined (15.0%), above the maximum share of 10.0%",
        "only 17 valid rows, fewer than the minimum of 18",
    ]


def test_integer_sensor_ids_and_absent_optional_columns(bounds):
    frame = clean_frame(12).drop("sigma").with_columns(pl.Series("sensor_id", list(range(12))))
    split = split_rows(frame, bounds)
    assert split.valid["sensor_id"].to_list()[:3] == ["0", "1", "2"]
    assert split.valid["sigma"].null_count() == 12
    assert split.summary["optional_columns"] == {"sigma": False, "sensor_id": True}


def test_domain_bounds_accepts_a_spec_like_object(bounds):
    class Domain:
        def bounds(self):
            return bounds

    class Spec:
        domain = Domain()
        temperature_range = (0.0, 50.0)

    assert domain_bounds(Spec()) == bounds
    assert ValidationRules.from_spec(Spec(), min_rows=3).temperature_range == (0.0, 50.0)
    with pytest.raises(ValueError, match="lo < hi"):
        domain_bounds({"x": (1, 0), "y": (0, 1), "t": (0, 1)})


def test_rules_and_bounds_from_the_real_problem_spec(tmp_path):
    from heat_platform.heat.spec import load_spec

    (tmp_path / "problem.yaml").write_text(
        "name: exp1\ndomain: {x: [0, 2], y: [0, 1], t: [0, 0.5]}\nsource: 0\n"
        "temperature_range: [-1, 3]\n"
    )
    spec = load_spec(tmp_path / "problem.yaml")
    assert domain_bounds(spec) == {"x": (0.0, 2.0), "y": (0.0, 1.0), "t": (0.0, 0.5)}
    assert ValidationRules.from_spec(spec).temperature_range == (-1.0, 3.0)
