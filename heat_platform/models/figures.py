"""Figures for people: diffusivity maps, loss curves, residual maps (matplotlib, no display)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence

import numpy as np

Field2D = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(bounds: dict[str, tuple[float, float]], n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(*bounds["x"], n)
    ys = np.linspace(*bounds["y"], max(2, round(n * (bounds["y"][1] - bounds["y"][0])
                                                / (bounds["x"][1] - bounds["x"][0]))))
    return np.meshgrid(xs, ys)


def diffusivity_maps(fields: dict[str, Field2D], bounds: dict[str, tuple[float, float]],
                     title: str = "diffusivity a(x, y)", label: str = "a"):
    """Side-by-side maps on one colour scale (e.g. candidate, champion, classical, truth)."""
    plt = _pyplot()
    X, Y = grid(bounds)
    values = {name: np.asarray(field(X, Y), dtype=float) for name, field in fields.items()}
    finite = [v[np.isfinite(v)] for v in values.values() if np.isfinite(v).any()]
    lo = min(v.min() for v in finite) if finite else 0.0
    hi = max(v.max() for v in finite) if finite else 1.0
    aspect = (bounds["y"][1] - bounds["y"][0]) / (bounds["x"][1] - bounds["x"][0])
    figure, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values), 3.6 * max(aspect, 0.5)),
                                squeeze=False, constrained_layout=True)
    image = None
    for axis, (name, value) in zip(axes[0], values.items(), strict=True):
        image = axis.pcolormesh(X, Y, value, vmin=lo, vmax=hi, cmap="viridis", shading="auto")
        axis.set_title(name)
        axis.set_xlabel("x")
        axis.set_ylabel("y")
        axis.set_aspect("equal")
    figure.colorbar(image, ax=axes[0].tolist(), label=label)
    figure.suptitle(title)
    return figure


def loss_curves(history: Sequence[dict[str, float]], title: str = "training"):
    """Each loss term and the validation RMSE against the step; an ensemble's members (history
    entries with ``member``) each draw their own curves, in the colours of their terms."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    members = sorted({h.get("member", 0) for h in history})
    curves = [(key, "-", key) for key in sorted({k for h in history for k in h
                                                  if k.startswith("loss")})]
    if any("val_rmse" in h for h in history):  # train_pinn's name for it
        curves.append(("val_rmse", "--", "validation RMSE of u"))
    for colour, (key, style, label) in enumerate(curves):
        for member in members:
            rows = [h for h in history if h.get("member", 0) == member]
            axis.semilogy([h["step"] for h in rows], [h.get(key, np.nan) for h in rows], style,
                          color=f"C{colour}", label=label if member == members[0] else None)
    axis.set_xlabel("step")
    axis.legend()
    axis.set_title(title if len(members) == 1 else f"{title} ({len(members)} members)")
    return figure


def residual_map(residual: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                 bounds: dict[str, tuple[float, float]], title: str = "PDE residual"):
    """|r| at three times (start, middle, end of the domain)."""
    plt = _pyplot()
    X, Y = grid(bounds, 61)
    times = np.linspace(*bounds["t"], 3)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for axis, t in zip(axes, times, strict=True):
        image = axis.pcolormesh(X, Y, np.abs(residual(X, Y, np.full_like(X, t))), cmap="magma",
                                shading="auto")
        axis.set_title(f"|r| at t = {t:.3g}")
        axis.set_aspect("equal")
        figure.colorbar(image, ax=axis)
    figure.suptitle(title)
    return figure


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    _pyplot().close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG inline in Markdown (Dagster shows it in the asset's metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
