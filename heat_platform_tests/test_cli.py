"""The `heat-platform` command line: help for every subcommand, and `simulate` into a landing zone."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from heat_platform.cli import build_parser, main


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, handlers = build_parser()
    for command in handlers:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert f"heat-platform {command}" in capsys.readouterr().out


def test_console_script_help_is_fast_and_lists_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "heat_platform.cli", "--help"],
                          capture_output=True, text=True, check=True)
    assert "simulate" in done.stdout


def test_simulate_writes_contract_files_idempotently(platform_paths, capsys) -> None:
    home = str(platform_paths.home)
    for _ in range(2):
        assert main(["--home", home, "simulate", "inclusion", "--seed", "1"]) == 0
    assert main(["--home", home, "simulate", "inclusion", "--seed", "2", "--shift", "material",
                 "--format", "csv"]) == 0
    experiment = platform_paths.landing / "inclusion"
    assert sorted(p.name for p in experiment.iterdir()) == [
        "b001.parquet", "b002-material.csv", "problem.yaml"]
    batch = pl.read_parquet(experiment / "b001.parquet")
    assert batch.columns == ["x", "y", "t", "u", "sensor_id", "sigma"]
    assert batch.schema["u"] == pl.Float64 and batch.height == 3200
    assert pl.read_csv(experiment / "b002-material.csv").height == 3200


def test_simulate_refuses_to_overwrite_a_different_problem(platform_paths) -> None:
    home = str(platform_paths.home)
    main(["--home", home, "simulate", "inclusion", "--experiment", "plate"])
    problem = platform_paths.landing / "plate" / "problem.yaml"
    assert "name: plate" in problem.read_text()
    problem.write_text(problem.read_text().replace("noise_sigma: 0.01", "noise_sigma: 0.02"))
    with pytest.raises(FileExistsError, match="different problem"):
        main(["--home", home, "simulate", "inclusion", "--experiment", "plate", "--seed", "5"])
    assert main(["--home", home, "simulate", "inclusion", "--experiment", "plate", "--seed", "5",
                 "--force"]) == 0
