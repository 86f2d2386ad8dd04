"""Synthetic experiments: measurement batches from a problem spec and a true a(x, y).

A :class:`Scenario` couples a problem spec (what the platform is told, shipped as YAML under
``data/scenarios``) with what only the simulator knows: the true diffusivity, the initial and
boundary temperatures it uses to run the forward model, the sensor layout and the noise.
Later batches can come from a *shifted* world: a changed material (another a(x, y)) or a
miscalibrated sensor set; the drift monitoring must tell those apart from benign batches.

Temperatures come from the manufactured solution when the spec has one and the material is the
spec's own, otherwise from the finite-volume forward solver on a fine grid. Everything is
deterministic for a given seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from heat_platform.heat.formula import parse_formula
from heat_platform.heat.solver import Grid, solve_heat
from heat_platform.heat.spec import ProblemSpec, spec_from_yaml

DATA = Path(__file__).parent / "data"
PINNACLE_POINTS = DATA / "pinnacle_heatinv" / "heatinv_points.dat"
LAYOUTS = ("grid", "random", "pinnacle", "given")


@dataclass(frozen=True)
class Shift:
    """A change of the world after the baseline: new material and/or miscalibrated sensors."""

    description: str
    diffusivity: str | None = None  # formula of the new a(x, y)
    biased_fraction: float = 0.0  # share of sensors reading u + bias
    bias: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """A problem.yaml and what only the simulator knows about the world behind it."""

    name: str
    spec_text: str  # the problem.yaml as the platform receives it
    layout: str  # default sensor layout
    sensors: tuple[int, int]  # grid shape (nx, ny), or (n, 1) for random layouts
    n_times: int
    # What the simulator knows beyond the spec (the inversion may not be told these).
    boundary_temperature: str
    initial_temperature: str
    shifts: dict[str, Shift] = field(default_factory=dict)
    noise: float | None = None  # the readings' real noise std (default: the spec's noise_sigma)
    sigma_column: bool = True  # whether batches carry a sigma column
    suite: bool = False  # one of the scenario suite's experiments (bench/scenarios.py)

    @cached_property
    def spec(self) -> ProblemSpec:
        return spec_from_yaml(self.spec_text)

    @classmethod
    def from_file(cls, path: Path, *, suite: bool = False) -> Scenario:
        """A scenario file: ``problem:`` (the problem.yaml) and ``simulation:`` (layout,
        sensors, n_times, boundary_temperature, initial_temperature, noise, sigma_column,
        shifts: {name: {description, diffusivity, biased_fraction, bias}})."""
        document = yaml.safe_load(path.read_text())
        header = "".join(line for line in path.read_text().splitlines(keepends=True)
                         if line.startswith("#"))
        problem, simulation = document["problem"], document["simulation"]
        return cls(
            name=problem["name"],
            spec_text=header + yaml.safe_dump(problem, sort_keys=False),
            layout=simulation["layout"],
            sensors=tuple(simulation["sensors"]),
            n_times=int(simulation["n_times"]),
            boundary_temperature=str(simulation["boundary_temperature"]),
            initial_temperature=str(simulation["initial_temperature"]),
            shifts={name: Shift(**shift) for name, shift in simulation.get("shifts", {}).items()},
            noise=simulation.get("noise"),
            sigma_column=bool(simulation.get("sigma_column", True)),
            suite=suite,
        )


def _builtin(name: str, **simulation) -> Scenario:
    """A built-in scenario whose problem.yaml ships as its own file (comments kept)."""
    return Scenario(name=name, spec_text=(DATA / "scenarios" / f"{name}.yaml").read_text(),
                    **simulation)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _builtin(
            "pinnacle-heatinv",
            layout="pinnacle",
            sensors=(50, 50),
            n_times=1,
            boundary_temperature="0",
            initial_temperature="sin(pi*x)*sin(pi*y)",
            shifts={
                "material": Shift("a stronger inhomogeneity: a = 2 + 1.8 sin(pi x) sin(pi y)",
                                  diffusivity="2 + 1.8*sin(pi*x)*sin(pi*y)"),
                "miscalibration": Shift("a quarter of the sensors read 0.3 too warm",
                                        biased_fraction=0.25, bias=0.3),
            },
        ),
        _builtin(
            "inclusion",
            layout="grid",
            sensors=(16, 8),
            n_times=25,
            boundary_temperature="0",
            initial_temperature="0",
            shifts={
                "material": Shift(
                    "the inclusion moved and grew: a = 1 + 3 exp(-((x-0.7)^2 + (y-0.5)^2)/0.04)",
                    diffusivity="1 + 3*exp(-((x - 0.7)**2 + (y - 0.5)**2)/0.04)"),
                "miscalibration": Shift("a quarter of the sensors read 0.05 too warm",
                                        biased_fraction=0.25, bias=0.05),
            },
        ),
        *(Scenario.from_file(path, suite=True)
          for path in sorted((DATA / "scenarios" / "suite").glob("*.yaml"))),
    )
}


@dataclass(frozen=True)
class Batch:
    """One measurement batch as columns (the measurement contract: x, y, t, u, sensor_id, sigma)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u: np.ndarray
    sensor_id: np.ndarray
    sigma: np.ndarray
    u_clean: np.ndarray  # before noise and bias: for tests and scoring, not written out
    sigma_column: bool = True  # whether the written batch tells its noise level

    def columns(self) -> dict[str, np.ndarray]:
        columns = {"x": self.x, "y": self.y, "t": self.t, "u": self.u,
                   "sensor_id": self.sensor_id}
        return columns | ({"sigma": self.sigma} if self.sigma_column else {})


def pinnacle_points() -> np.ndarray:
    """The 2500 (x, y, t) observation points of PINNacle HeatInv."""
    return np.loadtxt(PINNACLE_POINTS)


def sensor_positions(scenario: Scenario, layout: str, sensors: tuple[int, int],
                     coordinates: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) sensor coordinates strictly inside the spatial domain. A sensor stays where it
    is from batch to batch: a random layout is drawn once per experiment (from its name), not
    per batch, so that a sensor id names one place in every batch."""
    (x0, x1), (y0, y1) = scenario.spec.domain.x, scenario.spec.domain.y
    if layout == "grid":
        nx, ny = sensors
        xs = x0 + (x1 - x0) * (np.arange(nx) + 0.5) / nx
        ys = y0 + (y1 - y0) * (np.arange(ny) + 0.5) / ny
        X, Y = np.meshgrid(xs, ys)
        return np.column_stack([X.ravel(), Y.ravel()])
    if layout == "random":
        rng = np.random.default_rng([zlib.crc32(scenario.spec.name.encode()), 1])
        n = sensors[0] * sensors[1]
        return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])
    if layout == "given":
        if coordinates is None or np.ndim(coordinates) != 2 or np.shape(coordinates)[1] != 2:
            raise ValueError("layout 'given' needs an (n, 2) array of sensor coordinates")
        return np.asarray(coordinates, dtype=float)
    raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def simulate_batch(
    scenario: Scenario,
    *,
    seed: int = 0,
    shift: str | None = None,
    layout: str | None = None,
    sensors: tuple[int, int] | None = None,
    n_times: int | None = None,
    noise_sigma: float | None = None,
    coordinates: np.ndarray | None = None,
    resolution: tuple[int, int, int] = (64, 64, 200),
) -> Batch:
    """Simulate one batch. Same arguments and seed, same batch, bit for bit."""
    spec = scenario.spec
    layout = layout or scenario.layout
    if noise_sigma is None:
        noise_sigma = scenario.noise if scenario.noise is not None else spec.noise_sigma
    sigma = noise_sigma
    if sigma is None or sigma < 0:
        raise ValueError("the noise level must be given and non-negative")
    change = _shift(scenario, shift)

    if layout == "pinnacle":
        points = pinnacle_points()
        x, y, t = points[:, 0], points[:, 1], points[:, 2]
        sensor_id = np.array([f"p{i:04d}" for i in range(len(x))])
    else:
        positions = sensor_positions(scenario, layout, sensors or scenario.sensors, coordinates)
        times = np.linspace(*spec.domain.t, n_times or scenario.n_times)
        x = np.tile(positions[:, 0], len(times))
        y = np.tile(positions[:, 1], len(times))
        t = np.repeat(times, len(positions))
        sensor_id = np.tile(np.array([f"s{i:04d}" for i in range(len(positions))]), len(times))

    u_clean = _temperature(scenario, true_diffusivity(scenario, shift), change, x, y, t,
                           resolution)
    rng = np.random.default_rng([seed, 2])
    u = u_clean + rng.normal(0.0, sigma, size=u_clean.shape)
    if change is not None and change.biased_fraction > 0:
        ids = np.unique(sensor_id)
        biased = rng.choice(ids, size=round(change.biased_fraction * len(ids)), replace=False)
        u = u + change.bias * np.isin(sensor_id, biased)
    return Batch(x=x, y=y, t=t, u=u, sensor_id=sensor_id, sigma=np.full_like(u, sigma),
                 u_clean=u_clean, sigma_column=scenario.sigma_column)


def true_diffusivity(scenario: Scenario, shift: str | None = None):
    """The a(x, y) formula the simulator uses (the spec's truth unless the material shifted)."""
    change = _shift(scenario, shift)
    if change is not None and change.diffusivity is not None:
        return parse_formula(change.diffusivity, key=f"shift {shift}", allowed=("x", "y"))
    if scenario.spec.diffusivity_truth is None:
        raise ValueError(f"scenario {scenario.name} has no diffusivity_truth")
    return scenario.spec.diffusivity_truth


def _shift(scenario: Scenario, shift: str | None) -> Shift | None:
    if shift is None:
        return None
    if shift not in scenario.shifts:
        raise ValueError(f"scenario {scenario.name} has no shift {shift!r}; "
                         f"choose one of {', '.join(scenario.shifts)}")
    return scenario.shifts[shift]


def _temperature(scenario: Scenario, a_true, change: Shift | None, x, y, t,
                 resolution: tuple[int, int, int]) -> np.ndarray:
    spec = scenario.spec
    material_changed = change is not None and change.diffusivity is not None
    if spec.temperature_truth is not None and not material_changed:
        return np.asarray(spec.temperature_truth(x=x, y=y, t=t), dtype=float)
    nx, ny, n_steps = resolution
    solution = solve_heat(
        Grid(x=spec.domain.x, y=spec.domain.y, nx=nx, ny=ny),
        a=a_true,
        f=spec.source,
        g=parse_formula(scenario.boundary_temperature, key="boundary_temperature"),
        u0=parse_formula(scenario.initial_temperature, key="initial_temperature",
                         allowed=("x", "y")),
        t_span=spec.domain.t,
        n_steps=n_steps,
    )
    return solution.at(x, y, t)
