"""The PINN's loss terms: the heat equation's residual in divergence form, for any
differentiable model, and the data misfit with its soft floor at the noise level.

    r(x, y, t) = u_t - d/dx(a u_x) - d/dy(a u_y) - f(x, y, t)

A *model* here is any torch callable that maps a tensor of PHYSICAL points ``[N, 3]``
(columns x, y, t) to ``[N, 2]`` (columns u, a) in physical units: the live PINN, an exported
TorchScript artifact loaded with ``torch.jit.load``, or an analytic module in a test. The same
:func:`heat_residual` is the PDE term of the PINN's loss, so training and scoring can never
disagree about the equation. Only torch is imported here (not DeepXDE), so scoring an
exported model stays light.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Model = Callable[[torch.Tensor], torch.Tensor]


def heat_residual(
    u: torch.Tensor,
    a: torch.Tensor,
    points: torch.Tensor,
    f: torch.Tensor,
    *,
    create_graph: bool = True,
) -> torch.Tensor:
    """r = u_t - (a u_x)_x - (a u_y)_y - f by automatic differentiation.

    ``u`` and ``a`` (shape ``[N]``) must have been computed from ``points`` (``[N, 3]``, x, y, t,
    with ``requires_grad``). With ``create_graph`` (training) the residual can itself be
    differentiated; without it (scoring) the graph is freed as soon as possible.
    """
    grad_u = _grad(u, points, create_graph=True)  # the fluxes are differentiated again
    div_x = _grad(a * grad_u[:, 0], points, create_graph, retain_graph=True)[:, 0]
    div_y = _grad(a * grad_u[:, 1], points, create_graph)[:, 1]
    return grad_u[:, 2] - div_x - div_y - f


def pde_residual(model: Model, spec, x, y, t, *, batch_size: int = 4096) -> np.ndarray:
    """The residual of ``model`` for ``spec``'s source at the points (x, y, t), in physical units.

    Evaluated in batches of ``batch_size`` points to bound memory, in the model's own dtype
    and on its device. Returns a float64 array shaped like the broadcast inputs.
    """
    return pde_terms(model, spec, x, y, t, batch_size=batch_size)[0]


def pde_terms(model: Model, spec, x, y, t, *,
              batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The residual r and the time derivative u_t of ``model`` at the points (physical units,
    float64, shaped like the broadcast inputs): u_t is one of the terms r balances, so it
    gives the residual a scale where the source is zero (a free decay)."""
    x, y, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, t)))
    shape = x.shape
    points = np.stack([x.ravel(), y.ravel(), t.ravel()], axis=1)
    dtype, device = _dtype_and_device(model)
    out = np.empty((2, len(points)))
    for start in range(0, len(points), batch_size):
        chunk = torch.as_tensor(points[start : start + batch_size], dtype=dtype, device=device)
        chunk.requires_grad_(True)
        ua = model(chunk)
        f = spec.source(x=chunk[:, 0], y=chunk[:, 1], t=chunk[:, 2])
        u_t = _grad(ua[:, 0], chunk, create_graph=True)[:, 2]
        r = heat_residual(ua[:, 0], ua[:, 1], chunk, f, create_graph=False)
        out[0, start : start + len(chunk)] = r.detach().cpu().double().numpy()
        out[1, start : start + len(chunk)] = u_t.detach().cpu().double().numpy()
    return out[0].reshape(shape), out[1].reshape(shape)


MISFIT_FLOOR_WIDTH = 0.01  # sigma^2 units; the spread of the mean of 2500 squared N(0,1) is 0.028


def floored_misfit(misfit: torch.Tensor, floor: float) -> torch.Tensor:
    """The data loss with a soft floor: ~``misfit`` above ``floor``, ~``floor`` below it
    (floor + w softplus((misfit - floor) / w), w = :data:`MISFIT_FLOOR_WIDTH`). Its slope, the
    data term's weight, falls from 1 to 0 as the misfit goes below the floor, so the PDE
    residual takes over there: the discrepancy principle as a soft constraint, not as a stopping
    rule. Smooth, for L-BFGS."""
    width = MISFIT_FLOOR_WIDTH
    return floor + width * torch.nn.functional.softplus((misfit - floor) / width)


def _grad(
    values: torch.Tensor, points: torch.Tensor, create_graph: bool, retain_graph: bool | None = None
) -> torch.Tensor:
    """d(values_i)/d(points_i) row by row; zeros where ``values`` do not depend on the points
    (a constant diffusivity, a steady temperature)."""
    if not values.requires_grad:
        return torch.zeros_like(points)
    return torch.autograd.grad(
        values,
        points,
        torch.ones_like(values),
        create_graph=create_graph,
        retain_graph=retain_graph,
        materialize_grads=True,
    )[0]


def _dtype_and_device(model) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first parameter or buffer (torch's defaults for a
    plain function)."""
    for tensors in ("parameters", "buffers"):
        for tensor in getattr(model, tensors, lambda: ())():
            if tensor.is_floating_point():
                return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")
