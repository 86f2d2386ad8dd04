"""Training set: held-out sensors, determinism, stability when batches arrive, round trip."""

from __future__ import annotations

import polars as pl
import pytest

from heat_platform.data.training_set import (
    BatchInput,
    build_training_set,
    load_training_set,
    save_training_set,
)
from heat_platform.data.validation import split_rows
from heat_platform_tests.data.conftest import BOUNDS, clean_frame


def validated(
    name: str, n: int = 200, *, seed: int = 0, prefix: str = "s", sensors: int = 40
) -> BatchInput:
    frame = split_rows(
        clean_frame(n, n_sensors=sensors, seed=seed, sensor_prefix=prefix), BOUNDS
    ).valid
    return BatchInput(name, f"{name}-sha", frame)


def assignment(ts) -> dict[str, str]:
    return {
        **dict.fromkeys(ts.train["sensor"].to_list(), "train"),
        **dict.fromkeys(ts.validation["sensor"].to_list(), "validation"),
    }


def test_split_is_by_sensor_and_deterministic():
    batches = [validated("b1"), validated("b2", seed=1, prefix="r")]
    ts = build_training_set(batches, BOUNDS, validation_fraction=0.25, seed=3)
    again = build_training_set(list(reversed(batches)), BOUNDS, validation_fraction=0.25, seed=3)
    assert ts.train.equals(again.train) and ts.validation.equals(again.validation)
    assert ts.data_version == again.data_version
    assert set(ts.train["sensor"]).isdisjoint(set(ts.validation["sensor"]))
    assert ts.train.height + ts.validation.height == 400
    assert 0 < ts.validation.height < 400
    assert set(ts.held_out_sensors) == set(ts.validation["sensor"])
    assert list(ts.train.columns)[:7] == ["x", "y", "t", "u", "sigma", "sensor", "batch"]


def test_adding_a_batch_does_not_move_existing_sensors():
    before = build_training_set([validated("b1")], BOUNDS)
    after = build_training_set([validated("b1"), validated("b2", seed=7, prefix="new")], BOUNDS)
    old = assignment(before)
    new = assignment(after)
    assert {s: new[s] for s in old} == old
    assert before.data_version != after.data_version
    assert [p["batch"] for p in after.partitions] == ["b1", "b2"]
    assert after.partitions[0]["n_rows"] == 200
    assert sum(p["n_train"] + p["n_validation"] for p in after.partitions) == 400


def test_sensor_is_the_location_when_no_sensor_id():
    frame = validated("b1").df.with_columns(pl.lit(None, pl.String).alias("sensor_id"))
    ts = build_training_set([BatchInput("b1", "v", frame)], BOUNDS)
    assert ts.train["sensor"][0].startswith("xy:")
    assert ts.train["sensor"].n_unique() + len(ts.held_out_sensors) == 40


def test_seed_and_fraction_change_the_version():
    batches = [validated("b1")]
    base = build_training_set(batches, BOUNDS)
    assert build_training_set(batches, BOUNDS, seed=1).data_version != base.data_version
    assert (
        build_training_set(batches, BOUNDS, validation_fraction=0.3).data_version
        != base.data_version
    )
    relabelled = [BatchInput("b1", "other-sha", batches[0].df)]
    assert build_training_set(relabelled, BOUNDS).data_version != base.data_version


def test_few_sensors_still_get_a_validation_sensor():
    ts = build_training_set([validated("b1", 20, sensors=2)], BOUNDS, validation_fraction=0.01)
    assert len(ts.held_out_sensors) == 1 and ts.validation.height == 10
    assert "held out" in ts.warnings[0]


def test_scaling_uses_bounds_and_training_temperatures(tmp_path):
    ts = build_training_set([validated("b1")], BOUNDS)
    assert ts.scaling.x.center == 0.5 and ts.scaling.y.scale == 1.0
    assert ts.scaling.u.center == pytest.approx(ts.train["u"].mean())
    assert ts.train["t_s"].min() >= -1.0 and ts.train["t_s"].max() <= 1.0


def test_save_and_load_round_trip_and_detect_tampering(tmp_path):
    ts = build_training_set([validated("b1"), validated("b2", seed=2, prefix="q")], BOUNDS)
    save_training_set(ts, tmp_path / "ts")
    loaded = load_training_set(tmp_path / "ts")
    assert loaded.train.equals(ts.train) and loaded.validation.equals(ts.validation)
    assert loaded.scaling == ts.scaling and loaded.data_version == ts.data_version
    assert loaded.partitions == ts.partitions
    (tmp_path / "ts" / "scaling.json").write_text('{"x": {}}')
    with pytest.raises(ValueError, match="modified after it was written"):
        load_training_set(tmp_path / "ts")


def test_rows_outside_a_changed_domain_are_refused_not_dropped():
    narrower = {**BOUNDS, "x": (0.0, 0.5)}
    with pytest.raises(ValueError, match="re-validate"):
        build_training_set([validated("b1")], narrower)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no validated batches"):
        build_training_set([], BOUNDS)
    with pytest.raises(ValueError, match="more than once"):
        build_training_set([validated("b1"), validated("b1")], BOUNDS)
