"""`heat-platform simulate`: write synthetic measurement batches into the landing zone.

Follows the measurement contract exactly like a lab would: ``<landing>/<experiment>/problem.yaml``
plus one file per batch. Files are written under a hidden temporary name and renamed into
place, so the landing-zone sensor never sees a half-written batch.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from heat_platform.files import atomic_path, atomic_write
from heat_platform.heat.spec import SpecError, load_spec, spec_from_yaml
from heat_platform.heat.synthetic import SCENARIOS, simulate_batch, true_diffusivity
from heat_platform.names import EXPERIMENT_NAME

BATCH_NAME = re.compile(r"[^/\\|,\[\]\x00-\x1f]{1,128}")


def write_problem(landing: Path, scenario_name: str, experiment: str, force: bool = False,
                  shift: str | None = None) -> Path:
    """Put the scenario's problem.yaml in the experiment's landing directory (idempotent).

    A synthetic experiment's problem.yaml carries the truth of the material in the specimen;
    after a material ``shift`` it is rewritten with the new material's truth (the world
    changed, and the platform's reports compare against what produced the data). Without a
    shift, a problem.yaml already moved on by a shift of the same scenario stays as it is.
    """
    scenario = SCENARIOS[scenario_name]
    variants = {None: _problem_text(scenario, experiment, None)}
    variants |= {name: _problem_text(scenario, experiment, name) for name in scenario.shifts}
    text = variants[shift]
    target = landing / experiment / "problem.yaml"
    if target.exists() and not force:
        try:
            landed = load_spec(target).sha256
        except SpecError:
            landed = None
        if landed == spec_from_yaml(text).sha256:
            return target
        of_this_scenario = {spec_from_yaml(t).sha256 for t in variants.values()}
        if landed not in of_this_scenario:
            raise FileExistsError(f"{target} holds a different problem; use --force to replace it")
        if shift is None or text == variants[None]:
            return target  # the world moved on: an unshifted batch does not move it back
    atomic_write(target, text)
    return target


def _problem_text(scenario, experiment: str, shift: str | None) -> str:
    """The problem.yaml of ``scenario`` for ``experiment``, with the truth of ``shift``'s
    material when it changes the material."""
    change = scenario.shifts.get(shift) if shift else None
    if change is None or change.diffusivity is None:
        if experiment == scenario.spec.name:
            return scenario.spec_text  # verbatim, comments and licence note included
        return dataclasses.replace(scenario.spec, name=experiment).to_yaml()
    truth = true_diffusivity(scenario, shift)
    spec = dataclasses.replace(scenario.spec, name=experiment, diffusivity_truth=truth,
                               temperature_truth=None,  # a manufactured u holds no longer
                               description=f"{scenario.spec.description} (after the shift "
                                           f"{shift!r}: {change.description})")
    return spec.to_yaml()


def write_batch(landing: Path, experiment: str, batch: str, columns: dict[str, np.ndarray],
                fmt: str = "parquet") -> Path:
    import polars as pl

    if not BATCH_NAME.fullmatch(batch) or batch.startswith(".") or "..." in batch:
        raise ValueError(f"invalid batch name {batch!r}")
    target = landing / experiment / f"{batch}.{fmt}"
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown format {fmt!r}; choose parquet or csv")
    frame = pl.DataFrame(columns)
    # written under a dot-name the landing zone ignores, then renamed into place
    with atomic_path(target) as temporary:
        if fmt == "parquet":
            frame.write_parquet(temporary)
        else:
            frame.write_csv(temporary)
    return target


def simulate_to_landing(
    landing: Path,
    scenario_name: str,
    *,
    experiment: str | None = None,
    batch: str | None = None,
    seed: int = 0,
    shift: str | None = None,
    fmt: str = "parquet",
    force: bool = False,
    **options,
) -> Path:
    """Simulate one batch of a built-in scenario and land it; returns the batch file."""
    if scenario_name not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario_name!r}; built in: {', '.join(SCENARIOS)}")
    experiment = experiment or scenario_name
    if not EXPERIMENT_NAME.fullmatch(experiment):
        raise ValueError(f"invalid experiment name {experiment!r}")
    write_problem(landing, scenario_name, experiment, force=force, shift=shift)
    simulated = simulate_batch(SCENARIOS[scenario_name], seed=seed, shift=shift, **options)
    name = batch or f"b{seed:03d}" + (f"-{shift}" if shift else "")
    return write_batch(landing, experiment, name, simulated.columns(), fmt)

