"""Affine scaling of coordinates and temperature, stored with the data and packaged with the model.

Coordinates map the experiment's domain onto [-1, 1]; temperature is standardised with the
training set's mean and spread. The same :class:`Scaling` object is written next to the training
set, used by the PINN's residual and baked into the exported TorchScript module, so training
and serving can never disagree about it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Affine:
    """``scaled = (value - center) / scale``."""

    center: float
    scale: float

    def forward(self, value):
        return (value - self.center) / self.scale

    def inverse(self, scaled):
        return scaled * self.scale + self.center


@dataclass(frozen=True)
class Scaling:
    x: Affine
    y: Affine
    t: Affine
    u: Affine

    @classmethod
    def fit(cls, bounds: dict[str, tuple[float, float]], u: np.ndarray) -> Scaling:
        """Coordinates from the domain bounds (not the data: sensors may not reach the edges),
        temperature from the observed values."""

        def from_bounds(lo: float, hi: float) -> Affine:
            return Affine(center=(lo + hi) / 2.0, scale=(hi - lo) / 2.0)

        u = np.asarray(u, dtype=float)
        spread = float(np.std(u)) if u.size > 1 else 1.0
        return cls(
            x=from_bounds(*bounds["x"]),
            y=from_bounds(*bounds["y"]),
            t=from_bounds(*bounds["t"]),
            u=Affine(center=float(np.mean(u)) if u.size else 0.0, scale=spread if spread > 0 else 1.0),
        )

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: asdict(getattr(self, name)) for name in ("x", "y", "t", "u")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaling:
        return cls(**{name: Affine(float(data[name]["center"]), float(data[name]["scale"]))
                      for name in ("x", "y", "t", "u")})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scaling:
        return cls.from_dict(json.loads(text))
