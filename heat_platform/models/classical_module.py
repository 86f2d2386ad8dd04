"""The classical inversion as a servable model: the same TorchScript interface as a PINN's.

A fit of :func:`heat_platform.heat.inversion.invert_spec` is a diffusivity at the nodes of a
finite-volume grid and the forward solution u at every node and time level. This module
carries both and interpolates them like the solver does (bilinear a, trilinear u), so
``torch.jit.load`` alone gives, in physical units::

    module(points)            # [N, 3] (x, y, t) -> [N, 2] (u, a)
    module.temperature(points)
    module.diffusivity(xy)
    module.in_domain(points)
    module.domain_bounds      # [3, 2]

Points outside the box take the value at the nearest point of it (``in_domain`` says which);
the serving layer, the gate and the smoke test need no notion of what kind of model they hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from heat_platform.files import atomic_path

FORMAT = "heat-platform-classical/1"
METADATA = "metadata.json"


class ClassicalModule(torch.nn.Module):
    """u and a of a classical fit on its grid, interpolated (float64 throughout)."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float], times: np.ndarray,
                 u: np.ndarray, a_nodes: np.ndarray):
        super().__init__()
        t = (float(times[0]), float(times[-1]))
        self.register_buffer("domain_bounds", torch.tensor([x, y, t], dtype=torch.float64))
        self.register_buffer("u_nodes", torch.as_tensor(np.asarray(u, dtype=np.float64)))
        self.register_buffer("a_nodes", torch.as_tensor(np.asarray(a_nodes, dtype=np.float64)))
        self.register_buffer("times", torch.as_tensor(np.asarray(times, dtype=np.float64)))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        points = points.to(torch.float64)
        return torch.stack([self.temperature(points), self.diffusivity(points[:, :2])], dim=1)

    @torch.jit.export
    def temperature(self, points: torch.Tensor) -> torch.Tensor:
        points = points.to(torch.float64)
        nt, ny, nx = self.u_nodes.shape[0], self.u_nodes.shape[1], self.u_nodes.shape[2]
        ix, wx = self._cell(points[:, 0], self.domain_bounds[0], nx)
        iy, wy = self._cell(points[:, 1], self.domain_bounds[1], ny)
        it, wt = self._cell(points[:, 2], self.domain_bounds[2], nt)
        u = self.u_nodes
        out = torch.zeros_like(wx)
        for dt_, ft in ((0, 1 - wt), (1, wt)):
            for dy, fy in ((0, 1 - wy), (1, wy)):
                for dx, fx in ((0, 1 - wx), (1, wx)):
                    out = out + ft * fy * fx * u[it + dt_, iy + dy, ix + dx]
        return out

    @torch.jit.export
    def diffusivity(self, xy: torch.Tensor) -> torch.Tensor:
        xy = xy.to(torch.float64)
        ny, nx = self.a_nodes.shape[0], self.a_nodes.shape[1]
        ix, wx = self._cell(xy[:, 0], self.domain_bounds[0], nx)
        iy, wy = self._cell(xy[:, 1], self.domain_bounds[1], ny)
        a = self.a_nodes
        return ((1 - wy) * ((1 - wx) * a[iy, ix] + wx * a[iy, ix + 1])
                + wy * ((1 - wx) * a[iy + 1, ix] + wx * a[iy + 1, ix + 1]))

    @torch.jit.export
    def in_domain(self, points: torch.Tensor) -> torch.Tensor:
        points = points.to(torch.float64)
        inside = (points >= self.domain_bounds[:, 0]) & (points <= self.domain_bounds[:, 1])
        return inside.all(dim=1)

    def _cell(self, values: torch.Tensor, bounds: torch.Tensor,
              nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The lower node index of each value's cell on ``nodes`` uniform levels over
        ``bounds``, and its weight towards the upper node (values clamped into the box)."""
        position = (values - bounds[0]) / (bounds[1] - bounds[0]) * (nodes - 1)
        position = position.clamp(0.0, float(nodes - 1))
        index = position.floor().clamp(max=float(nodes - 2)).to(torch.int64)
        return index, position - index.to(position.dtype)


def export_classical(result, path: Path, metadata: dict) -> Path:
    """Script a fit of ``invert_spec`` (its grid, a at the nodes, the forward solution) to
    ``path``, with ``metadata`` (spec name, domain, ...) in the file."""
    grid, solution = result.grid, result.solution
    times = np.asarray(solution.times, dtype=float)
    if not np.allclose(np.diff(times), times[1] - times[0]):
        raise ValueError("the classical fit's time levels must be uniform")
    module = torch.jit.script(ClassicalModule(tuple(grid.x), tuple(grid.y), times,
                                              solution.u, result.a_nodes))
    with atomic_path(path) as partial:
        torch.jit.save(module, str(partial), _extra_files={METADATA: json.dumps(
            {"format": FORMAT, "kind": "classical", **metadata})})
    return path
