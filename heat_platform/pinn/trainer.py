"""Training: Adam, then L-BFGS, with checkpoints, resumption, a divergence guard, a warm start
of a and ensembles (:func:`train_pinn`).

Adam runs first on collocation points redrawn every ``resample_every`` steps, then L-BFGS on
the last set. Checkpoints, resumption and the guard against divergence are one DeepXDE callback
(:class:`Monitor`). Optionally (the accurate profile) a starts from the classical inversion of
the same observations (:func:`warm_start_diffusivity`) and stays there during Adam, which then
fits u alone; L-BFGS trains both. Where a training ends depends on its initialisation and
collocation points as much as on the data, so ``ensemble`` > 1 trains members from several
seeds and merges them (:func:`.network.merge_members`).

Everything is seeded: the same data, config and seed give the same numbers on the same device
and thread count.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heat_platform.files import atomic_path
from heat_platform.heat.observations import Observations, known_noise
from heat_platform.heat.scaling import Scaling
from heat_platform.pinn.backend import dde, lbfgs_options, resolve_device, torch_settings
from heat_platform.pinn.config import OPERATIONAL_FIELDS, PINNConfig
from heat_platform.pinn.network import HeatNet, merge_members
from heat_platform.pinn.problem import HeatData

CHECKPOINT_FORMAT = 1
# The warm start of a (config.warm_start_a): Adam on a grid of the spatial domain.
WARM_START_GRID, WARM_START_STEPS, WARM_START_LR = 61, 1500, 3e-3
PHASES = {"adam": 0.0, "lbfgs": 1.0}  # logged as numbers, so metric stores can plot them


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
    stopped_by: str = "iteration cap"  # or criteria, time budget, converged

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
    if config.misfit_floor and known_noise(train, spec) is None:
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
        stopped_by=", ".join(sorted({member.stopped_by for member in members})),
    )


def member_seed(seed: int, k: int) -> int:
    """The seed of ensemble member ``k`` of a training seeded ``seed``: ``seed`` itself for
    member 0 (an ensemble of one is the plain training), else a 32-bit draw of NumPy's
    ``SeedSequence([seed, k])``, independent of every other (seed, k)."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])

def _member_log(log: Callable[[int, dict[str, float]], None], k: int):
    return lambda step, metrics: log(step, {f"member{k}/{name}": v for name, v in metrics.items()})


def _train_network(spec, train: Observations, scaling: Scaling, config: PINNConfig, log,
                   checkpoint_dir, validation: Observations | None,
                   classical: Callable[[], Any]) -> TrainedPINN:
    """One network's training: :func:`train_pinn` for ``config.ensemble`` = 1."""
    device = resolve_device(config.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
    fingerprint = _fingerprint(spec, train, scaling, config)
    store = _CheckpointStore(Path(checkpoint_dir), fingerprint) if checkpoint_dir else None
    saved = store.load() if store else None

    with torch_settings(device, dtype, config.threads), contextlib.ExitStack() as stack:
        with torch.random.fork_rng(devices=[]):  # seed the initialisation, not the caller's RNG
            torch.manual_seed(config.seed)
            net = HeatNet(spec, scaling, config)
        data = HeatData(spec, train, scaling, config, np.random.default_rng(config.seed))
        model = dde.Model(data, net)
        monitor = Monitor(config, log, store, validation)
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
        if data.conditions:
            weights.append(config.weight_conditions)

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
            with lbfgs_options(config.lbfgs_iterations, min(config.log_every, config.checkpoint_every)):
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
        stopped_by=monitor.stopped_by or (
            "iteration cap" if monitor.step >= config.adam_iterations + config.lbfgs_iterations
            else "converged"),
    )

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
        # the stopping criteria (config.stop_patience): best values so far, logs without gain
        self.best = {"val_rmse": math.inf, "loss_pde": math.inf}
        self.without_gain = 0
        self.stopped_by: str | None = None  # "criteria", "time budget", "converged"
        noise = None if validation is None or validation.sigma is None else validation.sigma
        self.validation_noise = None if noise is None else float(np.sqrt(np.mean(noise**2)))

    def get_state(self) -> dict:
        state = {"history": self.history, "wall_time_s": self.wall_time(),
                 "best": self.best, "without_gain": self.without_gain}
        return state | ({"warm_start": self.warm_start} if self.warm_start else {})

    def set_state(self, state: dict) -> None:
        self.history = list(state["history"])
        self.wall_before = state["wall_time_s"]
        self.warm_start = state.get("warm_start")
        self.best = dict(state.get("best", self.best))
        self.without_gain = state.get("without_gain", 0)
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
            self.stopped_by = "time budget"
        if self.phase == "lbfgs" and self.step == previous:
            model.stop_training = True  # L-BFGS made no progress: it has converged
            self.stopped_by = "converged"
        if self.phase == "lbfgs" and metrics is not None and self._stop_on_criteria(metrics):
            model.stop_training = True
            self.stopped_by = "criteria"

    def _stop_on_criteria(self, metrics: dict[str, float]) -> bool:
        """Has neither the held-out RMSE nor the PDE loss improved by ``stop_tolerance`` for
        ``stop_patience`` logged steps in a row?"""
        patience = self.config.stop_patience
        if patience is None:
            return False
        gained = False
        for name in self.best:
            value = metrics.get(name)
            if value is not None and value < self.best[name] * (1 - self.config.stop_tolerance):
                self.best[name], gained = value, True
        self.without_gain = 0 if gained else self.without_gain + 1
        return self.without_gain >= patience

    def loss_terms(self, values) -> dict[str, float]:
        names = self.model.data.term_names
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
            if self.validation_noise:
                metrics["val_rmse_to_noise"] = metrics["val_rmse"] / self.validation_noise
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
        with atomic_path(self.path) as partial:
            torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state},
                       partial)

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

    from heat_platform.heat.inversion import invert_spec

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
