"""A physics-informed neural network for the inverse heat problem, with DeepXDE.

    u_t - div(a(x, y) grad u) = f(x, y, t)      find a(x, y) from noisy samples of u

The whole problem, DeepXDE style (:func:`train_pinn`):

* **networks**: u(x, y, t) and a(x, y) are two fully connected networks side by side
  (``HeatNet``, a ``dde.nn.NN``) behind the same input scaling (x, y, t -> [-1, 1]); u is
  de-standardised on the way out, so the network maps PHYSICAL points to PHYSICAL (u, a).
  a depends on (x, y) only and stays positive, a = a_b(x, y) exp(D(x, y) N(x, y)), where
  D = (1 - xi^2)(1 - eta^2) vanishes on the spatial boundary: the spec's boundary diffusivity
  a_b holds exactly (a hard constraint). Without a_b, a = a_ref exp(N).
* **PDE**: the residual in divergence form (:func:`heat_residual`) at collocation points drawn
  uniformly from the domain and redrawn every ``resample_every`` Adam steps, plus (by default)
  at the observation points. Autograd differentiates through the input scaling, which is the
  rewritten PDE u_t = (su/st) v_tau, d/dx(a u_x) = (su/sx^2) d/dxi(a v_xi); the residual is
  measured in units of su/st, the scaled temperature per scaled time.
* **observations**: the misfit (u - u_obs) / sigma at the sensors (sigma per reading, else the
  spec's ``noise_sigma``, else the temperature's spread), so at the noise level the data loss
  is about 1. With ``misfit_floor`` (the accurate profile) the data term stops rewarding a fit
  closer than the noise (:func:`floored_misfit`): once u is that close, L-BFGS lowers the PDE
  residual instead of fitting the noise, and a drifts less as training goes on (not on every
  noise draw: bench/pinn_accuracy.py).
* **training**: Adam, then L-BFGS on the last collocation set; checkpoints, resumption and a
  guard against divergence are callbacks. Optionally (the accurate profile) a starts from the
  classical inversion of the same observations (:func:`warm_start_diffusivity`) and stays
  there during Adam, which then fits u alone; L-BFGS trains both. On noise draws where the PINN
  alone ends far from a tuned Tikhonov fit this is what brings it back (bench/pinn_accuracy.py).
* **ensemble**: where a training ends depends on its initialisation and collocation points as
  much as on the data (on one noise draw of PINNacle HeatInv, eight seeds end between 0.026
  and 0.054), so ``ensemble`` > 1 (the accurate profile) trains members from several seeds and
  merges them into one network with their mean u and geometric mean a (:func:`merge_members`),
  which serves, scores and exports like any other; the members' spread of a is kept as a map
  of where a is least determined.

Not built yet: an unknown source term. It would be a third network f(x, y, t) (or a
correction added to the spec's f), selected by a config flag, entering :func:`heat_residual`
in place of ``spec.source``; without more data than u it is not identifiable, so it needs a
prior (a penalty or a parametric form) as well.

Everything is seeded: the same data, config and seed give the same numbers on the same
device and thread count. DeepXDE is imported on first use only (it takes seconds), with the
PyTorch backend chosen through ``DDE_BACKEND`` so that nothing is written to ``~/.deepxde``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heat_platform.pinn.physics import heat_residual
from heat_platform.pinn.scaling import Scaling

CHECKPOINT_FORMAT = 1
BOUNDARY_POINTS = 256  # (x, y) samples on the spatial boundary for the soft boundary loss on a
# The warm start of a (config.warm_start_a): Adam on a grid of the spatial domain.
WARM_START_GRID, WARM_START_STEPS, WARM_START_LR = 61, 1500, 3e-3
PHASES = {"adam": 0.0, "lbfgs": 1.0}  # logged as numbers, so metric stores can plot them
# Fields that change how a training runs, not what it computes: left out of the fingerprint.
OPERATIONAL_FIELDS = ("device", "threads", "checkpoint_every", "log_every")


@dataclass
class PINNConfig:
    """Hyper-parameters of one PINN training (plain data; the pipeline's Dagster config mirrors
    it). All fields but :data:`OPERATIONAL_FIELDS` are part of the checkpoint fingerprint."""

    hidden_u: int = 64
    """Width of each hidden layer of the temperature network u(x, y, t)."""
    depth_u: int = 3
    """Number of hidden layers of u."""
    hidden_a: int = 32
    """Width of each hidden layer of the diffusivity network a(x, y)."""
    depth_a: int = 2
    """Number of hidden layers of a."""
    activation: str = "tanh"
    """Activation of both networks, any name DeepXDE knows (tanh, sin, silu, ...)."""
    dtype: str = "float32"
    """Floating point type of training and of the exported model: float32 or float64."""
    adam_iterations: int = 500
    """Adam steps before L-BFGS (0: L-BFGS only)."""
    adam_lr: float = 1e-3
    """Adam's initial learning rate."""
    adam_lr_final: float | None = None
    """Adam's learning rate at its last step, reached by exponential decay (None: constant)."""
    lbfgs_iterations: int = 2000
    """L-BFGS iterations after Adam, on a fixed collocation set (0: no L-BFGS)."""
    n_domain: int = 2000
    """Collocation points for the PDE residual, uniform in the space-time domain."""
    resample_every: int = 100
    """Draw new collocation points every this many Adam steps (0: never)."""
    pde_at_observations: bool = True
    """Also penalise the PDE residual at the observation points."""
    weight_pde: float = 1.0
    """Weight of the mean squared PDE residual (in units of su/st)."""
    weight_data: float = 1.0
    """Weight of the mean squared data misfit ((u - u_obs) / sigma)^2."""
    misfit_floor: float = 0.0
    """Mean squared misfit (units of sigma^2) below which the data term gives no more reward
    (:func:`floored_misfit`); 1 is the noise level, the misfit of the truth. 0: no floor.
    Needs the noise level: readings' sigma or the spec's ``noise_sigma``."""
    weight_boundary_a: float = 100.0
    """Weight of the boundary loss on a; used only when the boundary diffusivity is soft."""
    hard_boundary_a: bool = True
    """Impose the spec's boundary diffusivity exactly (True) or through a loss term (False)."""
    warm_start_a: bool = False
    """Start a from the classical inversion of the same observations (finite volumes, Laplacian
    Tikhonov penalty, discrepancy principle; seconds) instead of from its prior (a_b or a_ref):
    the a-network is first fitted to that field on a grid."""
    freeze_a_steps: int = 0
    """Keep a as it starts for this many steps (Adam's, then L-BFGS's, which advance in chunks
    of ``log_every``), so that u alone first fits the data and the PDE with that a; then both
    train. Meant with ``warm_start_a``."""
    seed: int = 0
    """Seed of the network initialisation and of the collocation points."""
    ensemble: int = 1
    """Members: independent trainings of the same config from different seeds (member 0 from
    ``seed``, member k from :func:`member_seed`), one after the other, merged into one network
    whose u is the members' mean and whose a is their geometric mean (:func:`merge_members`).
    Where a member's training ends depends on its seed, not on the data alone; the mean of
    the members is never further from the truth than they are on average (for a, whose
    geometric mean is taken, up to its difference from the mean, about var(a) / 2a)."""
    max_minutes: float | None = None
    """Wall-clock budget: training stops, keeping its model, once it is spent (None: none).
    A run cut short by the budget is not reproducible."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    threads: int | None = None
    """CPU threads for torch during training (None: torch's default)."""
    checkpoint_every: int = 500
    """Save a checkpoint every this many steps when a checkpoint directory is given."""
    log_every: int = 100
    """Record metrics (history, ``log`` callback) every this many steps."""

    @classmethod
    def fast(cls) -> PINNConfig:
        """Demo and test profile: small networks, trains in about a minute on 2 cores."""
        return cls(
            hidden_u=32,
            depth_u=2,
            hidden_a=16,
            depth_a=2,
            adam_iterations=200,
            adam_lr=2e-3,
            lbfgs_iterations=600,
            n_domain=1000,
            resample_every=100,
            checkpoint_every=200,
            log_every=50,
        )

    @classmethod
    def accurate(cls) -> PINNConfig:
        """Benchmark profile: PINNacle HeatInv in a few minutes on 2 cores (figures and what
        was tried: bench/pinn_accuracy.py)."""
        return cls(
            hidden_u=32,
            depth_u=2,
            hidden_a=32,
            depth_a=2,
            adam_iterations=500,
            adam_lr=1e-3,
            lbfgs_iterations=2500,  # chosen on noise seeds 3-5, not the benchmark's 0-2
            misfit_floor=1.0,
            n_domain=2000,
            resample_every=100,
            warm_start_a=True,
            freeze_a_steps=500,
            ensemble=3,  # as many members as 10 minutes hold on the slowest 2-core machine seen
            checkpoint_every=500,
            log_every=100,
        )

    def check(self) -> PINNConfig:
        """Raise ValueError for values training cannot use; return self."""
        positive = (
            "hidden_u",
            "depth_u",
            "hidden_a",
            "depth_a",
            "n_domain",
            "checkpoint_every",
            "log_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"PINNConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("adam_iterations", "lbfgs_iterations", "resample_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"PINNConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adam_lr", "weight_pde", "weight_data", "weight_boundary_a"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PINNConfig.{name} must be > 0, got {getattr(self, name)}")
        if not self.misfit_floor >= 0:
            raise ValueError(f"PINNConfig.misfit_floor must be >= 0, got {self.misfit_floor}")
        if self.adam_lr_final is not None and not self.adam_lr_final > 0:
            raise ValueError(f"PINNConfig.adam_lr_final must be > 0, got {self.adam_lr_final}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"PINNConfig.dtype must be float32 or float64, got {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"PINNConfig.device must be auto, cpu or cuda, got {self.device!r}")
        if self.ensemble < 1:
            raise ValueError(f"PINNConfig.ensemble must be >= 1, got {self.ensemble}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"PINNConfig.threads must be >= 1 or None, got {self.threads}")
        return self


@dataclass
class Observations:
    """Temperature readings u at points (x, y, t), physical units; ``sigma`` is the standard
    deviation of each reading's noise when known."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    u: np.ndarray
    sigma: np.ndarray | None = None

    def __post_init__(self):
        for name in ("x", "y", "t", "u"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).ravel())
        if len({len(self.x), len(self.y), len(self.t), len(self.u)}) != 1 or not len(self.u):
            raise ValueError("Observations need x, y, t and u of one common, non-zero length")
        if self.sigma is not None:
            self.sigma = np.broadcast_to(
                np.asarray(self.sigma, dtype=np.float64), self.u.shape
            ).copy()
            if not np.all(self.sigma > 0):
                raise ValueError("Observations.sigma must be > 0")
        if not all(np.all(np.isfinite(getattr(self, n))) for n in ("x", "y", "t", "u")):
            raise ValueError("Observations must be finite")

    @property
    def points(self) -> np.ndarray:
        """``[N, 3]``: columns x, y, t."""
        return np.stack([self.x, self.y, self.t], axis=1)


class TrainingDiverged(RuntimeError):
    """The loss became non-finite: training stopped, no model is returned."""

    def __init__(self, step: int, losses: dict[str, float]):
        terms = ", ".join(f"{name}={value:.4g}" for name, value in losses.items())
        super().__init__(f"PINN training diverged at step {step}: {terms}")
        self.step, self.losses = step, losses

    def __reduce__(self):
        return type(self), (self.step, self.losses)


@dataclass
class TrainedPINN:
    """A trained network with what produced it. The network lives on the CPU."""

    net: torch.nn.Module
    config: PINNConfig
    scaling: Scaling
    spec: Any
    history: list[dict[str, float]]
    iterations: int
    wall_time_s: float
    device: str
    fingerprint: str
    resumed_from_step: int = 0  # > 0 when training continued from a checkpoint
    warm_start: dict[str, float] | None = None  # how a was started (config.warm_start_a)
    members: tuple[torch.nn.Module, ...] = ()  # an ensemble's members, merged into ``net``

    @property
    def spec_name(self) -> str:
        return self.spec.name

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return self.spec.domain.bounds()

    def predict(self, x, y, t, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Physical u and a at the points (broadcast), as float64 arrays."""
        x, y, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, t)))
        points = np.stack([x.ravel(), y.ravel(), t.ravel()], axis=1)
        dtype = next(self.net.parameters()).dtype
        out = np.empty((len(points), 2))
        with torch.no_grad():
            for start in range(0, len(points), batch_size):
                chunk = torch.as_tensor(
                    points[start : start + batch_size], dtype=dtype, device="cpu"
                )
                out[start : start + len(chunk)] = self.net(chunk).double().numpy()
        return out[:, 0].reshape(x.shape), out[:, 1].reshape(x.shape)

    def diffusivity(self, x, y, batch_size: int = 65536) -> np.ndarray:
        """Physical a at the points (x, y) (broadcast), as a float64 array."""
        return self._over_xy(self.net.diffusivity, x, y, batch_size)

    def diffusivity_spread(self, x, y, batch_size: int = 65536) -> np.ndarray | None:
        """The standard deviation of the ensemble members' a at the points (x, y): where the
        members disagree, the data and the PDE pin a down least. None for a single network."""
        if not self.members:
            return None

        def spread(xy: torch.Tensor) -> torch.Tensor:
            a = torch.stack([member.diffusivity(xy) for member in self.members]).double()
            return a.std(dim=0, correction=0)

        return self._over_xy(spread, x, y, batch_size)

    def _over_xy(self, field: Callable[[torch.Tensor], torch.Tensor], x, y,
                 batch_size: int) -> np.ndarray:
        """``field`` (xy [N, 2] -> [N]) at the points (x, y) (broadcast), in batches, as a
        float64 array."""
        x, y = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y)))
        points = np.stack([x.ravel(), y.ravel()], axis=1)
        dtype = next(self.net.parameters()).dtype
        out = np.empty(len(points))
        with torch.no_grad():
            for start in range(0, len(points), batch_size):
                chunk = torch.as_tensor(
                    points[start : start + batch_size], dtype=dtype, device="cpu"
                )
                out[start : start + len(chunk)] = field(chunk).double().numpy()
        return out.reshape(x.shape)

    def export(self, path: str | Path) -> Path:
        """Write the self-contained TorchScript serving artifact (see :mod:`.export`)."""
        from heat_platform.pinn.export import export_pinn

        return export_pinn(self, path)


def train_pinn(
    spec,
    train: Observations,
    scaling: Scaling,
    config: PINNConfig,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    validation: Observations | None = None,
) -> TrainedPINN:
    """Train a PINN on ``train`` (physical units) for the problem ``spec``.

    ``log(step, metrics)`` is called every ``config.log_every`` steps with each loss term,
    the weighted total, the learning rate, the phase (0 Adam, 1 L-BFGS), the wall time and,
    given ``validation``, the RMSE of u on it (physical units). With ``checkpoint_dir``, a
    checkpoint is written every ``config.checkpoint_every`` steps and at the end, and a call
    with the same directory, spec, data and config resumes from it (a finished run returns at
    once). Raises :class:`TrainingDiverged` when the loss becomes non-finite.

    With ``config.ensemble`` > 1 the members train one after the other (each resumable on its
    own, ``max_minutes`` shared out between those still to train), their metrics reach ``log``
    as ``member<k>/<name>`` and their history entries carry ``member``; the returned network is
    their merge (:func:`merge_members`), and ``iterations``, ``wall_time_s`` and
    ``resumed_from_step`` are the members' sums.
    """
    config = copy.deepcopy(config).check()
    if config.misfit_floor and _known_noise(train, spec) is None:
        raise ValueError("PINNConfig.misfit_floor is in units of the noise level, which is not "
                         "known: give the readings' sigma or the spec's noise_sigma")
    # computed on first use only: an ensemble's members share it, resumed ones never need it
    classical = functools.cache(functools.partial(_classical_inversion, spec, train))
    if config.ensemble == 1:
        return _train_network(spec, train, scaling, config, log, checkpoint_dir, validation,
                              classical)
    members: list[TrainedPINN] = []
    for k in range(config.ensemble):
        budget = config.max_minutes
        if budget is not None:  # an equal share of what is left
            spent = sum(member.wall_time_s for member in members) / 60
            budget = max(budget - spent, 0.0) / (config.ensemble - k)
        member_config = dataclasses.replace(
            config, ensemble=1, seed=member_seed(config.seed, k), max_minutes=budget
        )
        member_log = None if log is None else _member_log(log, k)
        member = _train_network(spec, train, scaling, member_config, member_log, checkpoint_dir,
                                validation, classical)
        members.append(member)
    nets = [member.net for member in members]
    return TrainedPINN(
        net=merge_members(nets, spec, scaling, config),
        config=config,
        scaling=scaling,
        spec=spec,
        history=[{"member": k, **entry} for k, m in enumerate(members) for entry in m.history],
        iterations=sum(member.iterations for member in members),
        wall_time_s=sum(member.wall_time_s for member in members),
        device=members[0].device,
        fingerprint=hashlib.sha256(" ".join(m.fingerprint for m in members).encode()).hexdigest(),
        resumed_from_step=sum(member.resumed_from_step for member in members),
        warm_start=members[0].warm_start,
        members=tuple(nets),
    )


def member_seed(seed: int, k: int) -> int:
    """The seed of ensemble member ``k`` of a training seeded ``seed``: ``seed`` itself for
    member 0 (an ensemble of one is the plain training), else a 32-bit draw of NumPy's
    ``SeedSequence([seed, k])``, independent of every other (seed, k)."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def merge_members(nets: list[torch.nn.Module], spec, scaling: Scaling,
                  config: PINNConfig) -> torch.nn.Module:
    """One ``HeatNet`` that computes exactly the mean u and the geometric mean a of ``nets``
    (``HeatNet`` s of ``config``): its u- and a-networks are the members' side by side,
    ``len(nets)`` times as wide, with block-diagonal hidden layers and output layers that
    average. u is affine in its network's output, so that average is the members' mean u;
    a = a_b exp(D N), so averaging N gives their geometric mean. Serving and scoring need no notion of
    an ensemble. The hidden-to-hidden layers are dense K h x K h matrices, mostly zeros: the
    exported u of 3 merged 2 x 32 members at 1000 points takes 0.27 ms against 0.064 ms for one
    (one thread, 2026-12-02 machine)."""
    k = len(nets)
    parts = _deepxde_parts()
    wide = dataclasses.replace(config, hidden_u=k * config.hidden_u, hidden_a=k * config.hidden_a)
    with torch.random.fork_rng(devices=[]):  # its random initialisation is overwritten
        merged = parts.HeatNet(spec, scaling, wide)
    merged.to(next(nets[0].parameters()).dtype)
    with torch.no_grad():
        for name in ("u_net", "a_net"):
            layers = [getattr(net, name).linears for net in nets]
            last = len(layers[0]) - 1
            for i, target in enumerate(getattr(merged, name).linears):
                weights = [member[i].weight for member in layers]
                biases = [member[i].bias for member in layers]
                if i == last:  # the mean of the members' outputs
                    weight, bias = torch.cat(weights, dim=1) / k, torch.stack(biases).mean(dim=0)
                elif i == 0:  # every member sees the same inputs
                    weight, bias = torch.cat(weights), torch.cat(biases)
                else:
                    weight, bias = torch.block_diag(*weights), torch.cat(biases)
                target.weight.copy_(weight)
                target.bias.copy_(bias)
    return merged.eval()


def _member_log(log: Callable[[int, dict[str, float]], None], k: int):
    return lambda step, metrics: log(step, {f"member{k}/{name}": v for name, v in metrics.items()})


def _train_network(spec, train: Observations, scaling: Scaling, config: PINNConfig, log,
                   checkpoint_dir, validation: Observations | None,
                   classical: Callable[[], Any]) -> TrainedPINN:
    """One network's training: :func:`train_pinn` for ``config.ensemble`` = 1."""
    dde = _import_deepxde()
    parts = _deepxde_parts()
    device = _resolve_device(config.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
    fingerprint = _fingerprint(spec, train, scaling, config)
    store = _CheckpointStore(Path(checkpoint_dir), fingerprint) if checkpoint_dir else None
    saved = store.load() if store else None

    with _torch_settings(dde, device, dtype, config.threads), contextlib.ExitStack() as stack:
        with torch.random.fork_rng(devices=[]):  # seed the initialisation, not the caller's RNG
            torch.manual_seed(config.seed)
            net = parts.HeatNet(spec, scaling, config)
        data = parts.HeatData(spec, train, scaling, config, np.random.default_rng(config.seed))
        model = dde.Model(data, net)
        monitor = parts.Monitor(config, log, store, validation)
        if saved is not None:
            net.load_state_dict(saved["net"])
            data.set_state(saved["data"])
            monitor.set_state(saved["monitor"])
            monitor.step = saved["step"]
        elif config.warm_start_a:
            monitor.warm_start = warm_start_diffusivity(net, spec, train, classical)
        if config.freeze_a_steps:
            stack.enter_context(_frozen(net.a_net, lambda: monitor.step < config.freeze_a_steps))
        phase = saved["phase"] if saved is not None else "adam"
        step = saved["step"] if saved is not None else 0
        weights = [config.weight_pde, config.weight_data]
        if data.soft_boundary:
            weights.append(config.weight_boundary_a)

        if phase == "adam" and config.adam_iterations > step:
            decay = None
            if config.adam_lr_final is not None and config.adam_iterations > 0:
                gamma = (config.adam_lr_final / config.adam_lr) ** (1 / config.adam_iterations)
                decay = ("exponential", gamma)
            model.compile("adam", lr=config.adam_lr, decay=decay, loss_weights=weights, verbose=0)
            if saved is not None:
                model.opt.load_state_dict(saved["optimizer"])
                if decay is not None:
                    model.lr_scheduler.load_state_dict(saved["scheduler"])
            monitor.start("adam", step)
            model.train_state.step = step
            model.train(
                iterations=config.adam_iterations - step,
                display_every=config.log_every,
                callbacks=[monitor],
                verbose=0,
            )
            step = monitor.step
        if phase in ("adam", "lbfgs") and config.lbfgs_iterations > 0 and not monitor.out_of_time:
            with _lbfgs_options(dde, config):
                model.compile("L-BFGS", loss_weights=weights, verbose=0)
                model.train_state.step = step
                if phase == "lbfgs":
                    model.opt.load_state_dict(saved["optimizer"])
                    # DeepXDE counts L-BFGS steps from the optimizer's own iteration counter,
                    # which the restored state carries: start the step count that much earlier.
                    model.train_state.step -= model.opt.state_dict()["state"][0]["n_iter"]
                monitor.start("lbfgs", step)
                model.train(display_every=config.log_every, callbacks=[monitor], verbose=0)
        if phase != "done":
            monitor.finish(model)

    net.to("cpu").eval()
    return TrainedPINN(
        net=net,
        config=config,
        scaling=scaling,
        spec=spec,
        history=monitor.history,
        iterations=monitor.step,
        wall_time_s=monitor.wall_time(),
        device=str(device),
        fingerprint=fingerprint,
        resumed_from_step=saved["step"] if saved is not None else 0,
        warm_start=monitor.warm_start,
    )


@functools.cache
def _deepxde_parts():
    """The DeepXDE subclasses, defined on first use so that importing this module stays fast."""
    dde = _import_deepxde()

    class HeatNet(dde.nn.NN):
        """Physical (x, y, t) -> physical (u, a): input scaling, the FNNs for u and a side by
        side, u's de-standardisation and a's positivity and boundary values."""

        def __init__(self, spec, scaling: Scaling, config: PINNConfig):
            super().__init__()
            self.u_net = dde.nn.FNN(
                [3] + [config.hidden_u] * config.depth_u + [1], config.activation, "Glorot normal"
            )
            self.a_net = dde.nn.FNN(
                [2] + [config.hidden_a] * config.depth_a + [1], config.activation, "Glorot normal"
            )
            # A zero last layer starts a at its prior (a_b, or a_ref) instead of at a random
            # field that the PDE residual would first have to undo.
            torch.nn.init.zeros_(self.a_net.linears[-1].weight)
            self.register_buffer(
                "center", torch.tensor([scaling.x.center, scaling.y.center, scaling.t.center])
            )
            self.register_buffer(
                "scale", torch.tensor([scaling.x.scale, scaling.y.scale, scaling.t.scale])
            )
            self.u_center, self.u_scale = float(scaling.u.center), float(scaling.u.scale)
            bounds = spec.domain.bounds()
            self.register_buffer("xy_lo", torch.tensor([bounds["x"][0], bounds["y"][0]]))
            self.register_buffer("xy_hi", torch.tensor([bounds["x"][1], bounds["y"][1]]))
            self.boundary_a = spec.boundary_diffusivity
            self.hard_boundary = self.boundary_a is not None and config.hard_boundary_a
            self.a_ref = _reference_diffusivity(spec)

        def forward(self, points: torch.Tensor) -> torch.Tensor:
            xi = (points - self.center) / self.scale
            u = self._temperature(xi)
            return torch.stack([u, self._diffusivity(points[:, :2], xi[:, :2])], dim=1)

        def temperature(self, points: torch.Tensor) -> torch.Tensor:
            """u alone (the a-network is not evaluated)."""
            return self._temperature((points - self.center) / self.scale)

        def _temperature(self, xi: torch.Tensor) -> torch.Tensor:
            return self.u_center + self.u_scale * self.u_net(xi)[:, 0]

        def diffusivity(self, xy: torch.Tensor) -> torch.Tensor:
            return self._diffusivity(xy, (xy - self.center[:2]) / self.scale[:2])

        def _diffusivity(self, xy: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
            log_a = self.a_net(xi)[:, 0]
            if not self.hard_boundary:
                return self.a_ref * torch.exp(log_a)
            # D = 1 in the middle of the rectangle and 0 on its edges, where a = a_b exactly.
            width = self.xy_hi - self.xy_lo
            vanishing = torch.prod(4 * (xy - self.xy_lo) * (self.xy_hi - xy) / width**2, dim=1)
            a_b = self.boundary_a(x=xy[:, 0], y=xy[:, 1])
            return a_b * torch.exp(vanishing * log_a)

    class HeatData(dde.data.Data):
        """Observation points first, then collocation points (then, for a soft boundary on a,
        points on the spatial boundary); one loss term each."""

        def __init__(
            self,
            spec,
            train: Observations,
            scaling: Scaling,
            config: PINNConfig,
            rng: np.random.Generator,
        ):
            self.spec, self.config, self.rng = spec, config, rng
            bounds = spec.domain.bounds()
            self.lo = np.array([bounds[k][0] for k in ("x", "y", "t")])
            self.hi = np.array([bounds[k][1] for k in ("x", "y", "t")])
            self.real = np.float32 if config.dtype == "float32" else np.float64
            self.observed = train.points
            self.u_observed = train.u[:, None].astype(self.real)
            sigma = _known_noise(train, spec)
            if sigma is None:
                sigma = scaling.u.scale
            self.sigma = torch.as_tensor(
                np.broadcast_to(sigma, train.u.shape).copy(), dtype=torch.get_default_dtype()
            )
            self.pde_scale = scaling.u.scale / scaling.t.scale
            self.soft_boundary = (
                spec.boundary_diffusivity is not None and not config.hard_boundary_a
            )
            self.last_losses = None
            self.resample()

        def resample(self) -> None:
            self.collocation = self.rng.uniform(self.lo, self.hi, (self.config.n_domain, 3))
            if self.soft_boundary:
                self.boundary = _boundary_points(self.rng, self.lo, self.hi, BOUNDARY_POINTS)
            self._batch = None

        def get_state(self) -> dict:
            return {
                "collocation": torch.from_numpy(self.collocation),
                "boundary": torch.from_numpy(self.boundary) if self.soft_boundary else None,
                "rng": json.dumps(self.rng.bit_generator.state),
            }

        def set_state(self, state: dict) -> None:
            self.collocation = state["collocation"].numpy()
            if self.soft_boundary:
                self.boundary = state["boundary"].numpy()
            self.rng.bit_generator.state = json.loads(state["rng"])
            self._batch = None

        def train_next_batch(self, batch_size=None):
            if self._batch is None:
                parts = [self.observed, self.collocation]
                parts += [self.boundary] if self.soft_boundary else []
                self._batch = np.concatenate(parts).astype(self.real)
            return self._batch, self.u_observed

        def test(self):
            return self.train_next_batch()

        def losses(self, targets, outputs, loss_fn, inputs, model, aux=None):
            n_obs, n_pde = len(self.observed), len(self.observed) + len(self.collocation)
            u, a = outputs[:, 0], outputs[:, 1]
            points = inputs.detach()
            f = self.spec.source(x=points[:, 0], y=points[:, 1], t=points[:, 2])
            r = heat_residual(u, a, inputs, f) / self.pde_scale
            r = r[0 if self.config.pde_at_observations else n_obs : n_pde]
            misfit = (u[:n_obs] - targets[:, 0]) / self.sigma
            losses = [torch.mean(r**2), torch.mean(misfit**2)]
            if self.soft_boundary:
                a_b = self.spec.boundary_diffusivity(x=points[n_pde:, 0], y=points[n_pde:, 1])
                losses.append(torch.mean(((a[n_pde:] - a_b) / a_b) ** 2))
            if model.net.training:  # the training batch; DeepXDE's test copy of it goes stale
                self.last_losses = torch.stack(losses).detach()  # logged: before any floor
            if self.config.misfit_floor:
                losses[1] = floored_misfit(losses[1], self.config.misfit_floor)
            return losses

    class Monitor(dde.callbacks.Callback):
        """After every step, in this order: the divergence guard, collocation resampling
        (Adam only), metrics, checkpoint, the caller's ``log``, the time budget."""

        def __init__(self, config: PINNConfig, log, store, validation: Observations | None):
            super().__init__()
            self.config, self.log, self.store = config, log, store
            self.validation = validation
            self.history: list[dict[str, float]] = []
            self.step = 0
            self.phase = "adam"
            self.wall_before = 0.0  # wall time of earlier, interrupted calls
            self.started = time.perf_counter()
            self.out_of_time = False
            self.warm_start: dict[str, float] | None = None

        def get_state(self) -> dict:
            state = {"history": self.history, "wall_time_s": self.wall_time()}
            return state | ({"warm_start": self.warm_start} if self.warm_start else {})

        def set_state(self, state: dict) -> None:
            self.history = list(state["history"])
            self.wall_before = state["wall_time_s"]
            self.warm_start = state.get("warm_start")
            self.started = time.perf_counter()

        def wall_time(self) -> float:
            return self.wall_before + time.perf_counter() - self.started

        def start(self, phase: str, step: int) -> None:
            self.phase, self.step = phase, step

        def on_epoch_end(self):
            model, previous = self.model, self.step
            self.step = model.train_state.step
            data = model.data
            if not torch.isfinite(data.last_losses).all():
                raise TrainingDiverged(self.step, self.loss_terms(data.last_losses.tolist()))
            every = self.config.resample_every
            if self.phase == "adam" and every and self.step % every == 0:
                data.resample()
            if _crossed(previous, self.step, self.config.log_every):
                metrics = self.metrics()
                self.history.append({"step": self.step, **metrics})
            else:
                metrics = None
            if self.store and _crossed(previous, self.step, self.config.checkpoint_every):
                self.store.save(self.snapshot(self.phase))
            if metrics is not None and self.log is not None:
                self.log(self.step, metrics)
            budget = self.config.max_minutes
            if budget is not None and self.wall_time() > 60 * budget:
                self.out_of_time = model.stop_training = True
            if self.phase == "lbfgs" and self.step == previous:
                model.stop_training = True  # L-BFGS made no progress: it has converged

        def loss_terms(self, values) -> dict[str, float]:
            names = ["loss_pde", "loss_data", "loss_boundary_a"]
            return {name: float(value) for name, value in zip(names, values, strict=False)}

        def metrics(self) -> dict[str, float]:
            model = self.model
            # The terms at the last evaluation on the training batch (DeepXDE's display step
            # evaluates after the step), before any floor; the total as minimised.
            metrics = self.loss_terms(model.data.last_losses.tolist())
            metrics["loss"] = float(np.sum(model.train_state.loss_train))
            metrics["lr"] = float(model.opt.param_groups[0]["lr"])
            metrics["phase"] = PHASES[self.phase]
            metrics["wall_time_s"] = self.wall_time()
            if self.validation is not None:
                metrics["val_rmse"] = _rmse(model.net, self.validation)
            if not all(math.isfinite(value) for value in metrics.values()):
                raise TrainingDiverged(self.step, metrics)
            return metrics

        def snapshot(self, phase: str) -> dict:
            model = self.model
            state = {
                "phase": phase,
                "step": self.step,
                "net": model.net.state_dict(),
                "data": model.data.get_state(),
                "monitor": self.get_state(),
            }
            if phase != "done":
                state["optimizer"] = model.opt.state_dict()
                if model.lr_scheduler is not None:
                    state["scheduler"] = model.lr_scheduler.state_dict()
            return state

        def finish(self, model) -> None:
            self.model = model
            if self.store:
                self.store.save(self.snapshot("done"))

    return _Namespace(HeatNet=HeatNet, HeatData=HeatData, Monitor=Monitor)


class _Namespace:
    def __init__(self, **items):
        self.__dict__.update(items)


class _CheckpointStore:
    """One file per fingerprint in the checkpoint directory, replaced atomically."""

    def __init__(self, directory: Path, fingerprint: str):
        self.path = directory / f"pinn-{fingerprint[:20]}.pt"
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != self.fingerprint or state.get("format") != CHECKPOINT_FORMAT:
            return None
        return state

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".pt.partial")
        torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state}, partial)
        os.replace(partial, self.path)


MISFIT_FLOOR_WIDTH = 0.01  # sigma^2 units; the spread of the mean of 2500 squared N(0,1) is 0.028


def floored_misfit(misfit: torch.Tensor, floor: float) -> torch.Tensor:
    """The data loss with a soft floor: ~``misfit`` above ``floor``, ~``floor`` below it
    (floor + w softplus((misfit - floor) / w), w = :data:`MISFIT_FLOOR_WIDTH`). Its slope, the
    data term's weight, falls from 1 to 0 as the misfit goes below the floor, so the PDE
    residual takes over there: the discrepancy principle as a soft constraint, not as a stopping
    rule. Smooth, for L-BFGS."""
    width = MISFIT_FLOOR_WIDTH
    return floor + width * torch.nn.functional.softplus((misfit - floor) / width)


def warm_start_diffusivity(net: torch.nn.Module, spec, train: Observations,
                           inversion: Callable[[], Any] | None = None) -> dict[str, float]:
    """Fit ``net``'s a-network to the classical inversion of ``train`` (Laplacian penalty,
    discrepancy principle, :func:`.inversion.invert_spec`; ``inversion()`` gives it where it is
    shared, as between an ensemble's members): Adam on the mean squared difference of a on a
    ``WARM_START_GRID``-square grid over the spatial domain. Returns the inversion's weight and
    chi^2 per observation, the fit's RMSE and the seconds it all took."""
    started = time.perf_counter()
    classical = inversion() if inversion is not None else _classical_inversion(spec, train)
    bounds = spec.domain.bounds()
    gx, gy = np.meshgrid(*(np.linspace(*bounds[k], WARM_START_GRID) for k in ("x", "y")))
    dtype, device = next(net.parameters()).dtype, next(net.parameters()).device
    xy = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=dtype, device=device)
    target = torch.tensor(classical.diffusivity(gx.ravel(), gy.ravel()), dtype=dtype,
                          device=device)
    optimizer = torch.optim.Adam(net.a_net.parameters(), lr=WARM_START_LR)
    for _ in range(WARM_START_STEPS):
        optimizer.zero_grad()
        loss = torch.mean((net.diffusivity(xy) - target) ** 2)
        loss.backward()
        optimizer.step()
    return {
        "classical_weight": float(classical.weight),
        "classical_chi2_per_observation": float(classical.chi2_per_observation),
        "fit_rmse": float(loss.detach()) ** 0.5,
        "seconds": time.perf_counter() - started,
    }


def _classical_inversion(spec, train: Observations):
    """The classical inversion of ``train`` that the warm start of a begins from."""
    from threadpoolctl import threadpool_limits

    from heat_platform.pinn.inversion import invert_spec

    with threadpool_limits(1):  # small sparse solves; one thread keeps them reproducible
        return invert_spec(spec, train)


@contextlib.contextmanager
def _frozen(module: torch.nn.Module, when: Callable[[], bool]) -> Iterator[None]:
    """Zero the gradients of ``module``'s parameters while ``when()``, so that the optimizers
    leave them where they are (Adam's moments stay zero; L-BFGS's steps have no component
    there). Not ``requires_grad_(False)``: DeepXDE's ``Model._outputs_losses`` turns
    ``requires_grad`` back on for every parameter after each evaluation."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad) if when() else grad

    handles = [parameter.register_hook(hook) for parameter in module.parameters()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _import_deepxde():
    """Import DeepXDE with the PyTorch backend, without touching ``~/.deepxde`` (which it
    writes only when no backend is named) and without keeping its switch of torch's default
    device to the GPU."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    default_device = _default_device_setting()
    import deepxde as dde

    torch.set_default_device(default_device)
    if dde.backend.backend_name != "pytorch":
        raise RuntimeError(
            f"the PINN needs DeepXDE's pytorch backend, DDE_BACKEND selects "
            f"{dde.backend.backend_name!r}"
        )
    return dde


@contextlib.contextmanager
def _torch_settings(
    dde, device: torch.device, dtype: torch.dtype, threads: int | None
) -> Iterator[None]:
    """Default device and dtype (which DeepXDE relies on) and thread count for one training,
    restored afterwards."""
    saved = (
        _default_device_setting(),
        torch.get_default_dtype(),
        torch.get_num_threads(),
        dde.config.real.precision,
    )
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
            saved[3], dde.config.real.set_float32
        )()


@contextlib.contextmanager
def _lbfgs_options(dde, config: PINNConfig) -> Iterator[None]:
    """DeepXDE keeps L-BFGS settings in a module-level dict: set ours, restore afterwards.

    L-BFGS runs in chunks so that the callbacks (logs, checkpoints, guard) see it regularly;
    chunks divide ``lbfgs_iterations`` where possible, so that the count is met exactly
    (DeepXDE reads a chunk of 1 as convergence, hence at least 2).
    """
    options = dde.optimizers.config.LBFGS_options
    saved = dict(options)
    chunk = min(config.log_every, config.checkpoint_every, config.lbfgs_iterations)
    if math.gcd(chunk, config.lbfgs_iterations) >= 2:
        chunk = math.gcd(chunk, config.lbfgs_iterations)
    chunk = max(2, chunk)
    dde.optimizers.set_LBFGS_options(
        maxcor=100, ftol=0, gtol=1e-8, maxiter=config.lbfgs_iterations, maxls=50
    )
    options["iter_per_step"] = chunk
    options["fun_per_step"] = int(1.25 * chunk)
    try:
        yield
    finally:
        options.clear()
        options.update(saved)


def _default_device_setting() -> torch.device | None:
    """What ``torch.set_default_device`` last set (None: nothing, torch's fast path)."""
    holder = getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None)
    if holder is None:  # not this torch's internals: keep whatever is in effect
        return torch.get_default_device()
    context = getattr(holder, "device_context", None)
    return None if context is None else context.device


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("PINNConfig.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def _reference_diffusivity(spec) -> float:
    """The a that a zero network output stands for when a is not pinned at the boundary:
    the geometric middle of the spec's diffusivity range, else 1."""
    low_high = getattr(spec, "diffusivity_range", None)
    if low_high is not None and low_high[0] > 0:
        return float(math.sqrt(low_high[0] * low_high[1]))
    return 1.0


def _boundary_points(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n: int
) -> np.ndarray:
    """``n`` points (x, y, t) with (x, y) uniform on the perimeter of the spatial rectangle."""
    points = rng.uniform(lo, hi, (n, 3))
    side = rng.integers(0, 4, n)
    points[side == 0, 0], points[side == 1, 0] = lo[0], hi[0]
    points[side == 2, 1], points[side == 3, 1] = lo[1], hi[1]
    return points


def _known_noise(train: Observations, spec) -> np.ndarray | float | None:
    """The readings' noise standard deviation: their own sigma, else the spec's noise_sigma;
    None when neither says."""
    return train.sigma if train.sigma is not None else spec.noise_sigma


def _crossed(previous: int, step: int, every: int) -> bool:
    """Did the step count pass a multiple of ``every`` (L-BFGS advances in chunks)?"""
    return step // every > previous // every


def _rmse(net: torch.nn.Module, observations: Observations) -> float:
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        points = torch.as_tensor(observations.points, dtype=dtype)
        u = net(points)[:, 0].double().cpu().numpy()
    return float(np.sqrt(np.mean((u - observations.u) ** 2)))


def _fingerprint(spec, train: Observations, scaling: Scaling, config: PINNConfig) -> str:
    """What a checkpoint is valid for: the spec, the data, the scaling and every config field
    that changes the result."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL_FIELDS}
    spec_id = getattr(spec, "sha256", None) or repr(spec)
    header = {
        "format": CHECKPOINT_FORMAT,
        "config": settings,
        "spec": spec_id,
        "scaling": scaling.to_dict(),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for values in (train.x, train.y, train.t, train.u, train.sigma):
        digest.update(b"-" if values is None else np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
