"""DeepXDE on PyTorch, and the torch settings one training runs under.

Importing this module imports DeepXDE (seconds), so only the training modules import it; the
backend is PyTorch (``DDE_BACKEND``, set when ``heat_platform`` is imported, so DeepXDE never
writes ``~/.deepxde``), and DeepXDE's switch of torch's default device to the GPU is undone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


def _default_device_setting() -> torch.device | None:
    """What ``torch.set_default_device`` last set (None: nothing, torch's fast path)."""
    holder = getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None)
    if holder is None:  # not this torch's internals: keep whatever is in effect
        return torch.get_default_device()
    context = getattr(holder, "device_context", None)
    return None if context is None else context.device


def _import_deepxde():
    default_device = _default_device_setting()
    import deepxde

    torch.set_default_device(default_device)
    if deepxde.backend.backend_name != "pytorch":
        raise RuntimeError(f"the PINN needs DeepXDE's pytorch backend, DDE_BACKEND selects "
                           f"{deepxde.backend.backend_name!r}")
    return deepxde


dde = _import_deepxde()


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("PINNConfig.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@contextlib.contextmanager
def torch_settings(device: torch.device, dtype: torch.dtype,
                   threads: int | None) -> Iterator[None]:
    """Default device and dtype (which DeepXDE relies on) and thread count for one training,
    restored afterwards."""
    saved = (_default_device_setting(), torch.get_default_dtype(), torch.get_num_threads(),
             dde.config.real.precision)
    # No default device at all on the CPU: a default device costs Python overhead on every
    # torch call, which dominates small networks.
    torch.set_default_device(None if device.type == "cpu" else device)
    torch.set_default_dtype(dtype)
    (dde.config.real.set_float64 if dtype == torch.float64 else dde.config.real.set_float32)()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_default_device(saved[0])
        torch.set_default_dtype(saved[1])
        torch.set_num_threads(saved[2])
        {64: dde.config.real.set_float64, 16: dde.config.real.set_float16}.get(
            saved[3], dde.config.real.set_float32)()


@contextlib.contextmanager
def lbfgs_options(iterations: int, every: int) -> Iterator[None]:
    """DeepXDE keeps L-BFGS settings in a module-level dict: set ours, restore afterwards.

    L-BFGS runs in chunks of about ``every`` iterations so that the callbacks (logs,
    checkpoints, guard) see it regularly; chunks divide ``iterations`` where possible, so that
    the count is met exactly (DeepXDE reads a chunk of 1 as convergence, hence at least 2).
    """
    options = dde.optimizers.config.LBFGS_options
    saved = dict(options)
    chunk = min(every, iterations)
    if math.gcd(chunk, iterations) >= 2:
        chunk = math.gcd(chunk, iterations)
    chunk = max(2, chunk)
    dde.optimizers.set_LBFGS_options(maxcor=100, ftol=0, gtol=1e-8, maxiter=iterations, maxls=50)
    options["iter_per_step"] = chunk
    options["fun_per_step"] = int(1.25 * chunk)
    try:
        yield
    finally:
        options.clear()
        options.update(saved)
