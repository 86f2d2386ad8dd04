"""Experiments on the PINN's training that are not (yet) part of train_pinn, with the L2RE recorded
along the way.

Run from the repository root (one thread by default, so two experiments can run side by side
on 2 cores):
    .venv/bin/python bench/pinn_experiments.py --seed 2 --iterations 3000 [--h1 W] [--h2 W]
        [--u-weight-decay W] [--init-seed N] [--set name=value ...] [--out PATH]

Each run trains one network of the accurate profile (``PINNConfig.profile("accurate")`` with
``ensemble=1``; ``--set`` overrides fields, all in one ``--set``; ``--iterations`` is Adam's 500
plus L-BFGS) on PINNacle HeatInv with noise seed ``--seed`` and writes the final scores and the
trajectory (every ``log_every`` steps: data misfit, PDE loss and the L2RE at the evaluation
points of bench/pinn_accuracy.py) to --out (bench/results/pinn_experiment.json). The truth is
used for scoring only. The variants change the PINN's training classes
(heat_platform.pinn.trainer, .problem) in this process only: an exploration tool, whose
successes move into ``train_pinn`` as config fields. ``--h1 W`` / ``--h2 W`` add
W mean|grad a|^2 / W mean(lap a)^2 at the collocation and observation points to the PDE term;
``--u-weight-decay W`` adds W times the sum of the squared weights of the u-network;
``--init-seed N`` initialises the networks and draws collocation points with N instead of the
noise seed; ``--warm-start-weight W`` warm-starts a from the classical inversion at the fixed
weight W instead of the discrepancy principle's; ``--warm-start-truth`` from the TRUE a (a
diagnostic); ``--average-from S [S ...]`` also scores the mean of the logged (u, a) fields and
of the logged weights from each step S to the end; ``--noise-scale F`` scales the drawn noise by
F, the declared sigma kept (0: noise-free data, with ``--set misfit_floor=0``); ``--floor-width
W`` sets the data misfit's soft floor's width (``MISFIT_FLOOR_WIDTH``, 0.01; ``--set
misfit_floor=0`` turns the floor off).

History and figures: bench/RESULTS.md#pinn-experiments
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import types
from pathlib import Path

import numpy as np
import torch
from pinn_accuracy import EvaluationSet, fields_at, parse_overrides, score

from heat_platform.heat import inversion
from heat_platform.heat.heatinv import heatinv_observations, heatinv_scaling, heatinv_spec
from heat_platform.pinn import losses, problem, trainer
from heat_platform.pinn.config import PINNConfig
from heat_platform.pinn.losses import _grad
from heat_platform.pinn.trainer import train_pinn

RESULTS = Path(__file__).parent / "results" / "pinn_experiment.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2, help="noise seed of the observations")
    parser.add_argument("--iterations", type=int, default=3000, help="Adam + L-BFGS iterations")
    parser.add_argument("--h1", type=float, default=0.0)
    parser.add_argument("--h2", type=float, default=0.0)
    parser.add_argument("--u-weight-decay", type=float, default=0.0)
    parser.add_argument("--init-seed", type=int, default=None)
    parser.add_argument("--average-from", type=int, nargs="*", default=[],
                        help="also score the mean of the logged (u, a) fields, and of the "
                             "logged weights, from each of these steps to the end")
    parser.add_argument("--warm-start-weight", type=float, default=None,
                        help="warm-start a from the classical inversion at this fixed penalty "
                             "weight instead of the discrepancy principle's")
    parser.add_argument("--warm-start-truth", action="store_true",
                        help="warm-start a from the true diffusivity (diagnostic)")
    parser.add_argument("--floor-width", type=float, default=None,
                        help="width of the data misfit's soft floor (MISFIT_FLOOR_WIDTH)")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="scale the drawn noise by this factor, the declared sigma kept "
                             "(0: noise-free data; diagnostic)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    spec = heatinv_spec()
    train = scaled_noise(heatinv_observations(noise_seed=args.seed, spec=spec), spec,
                         args.noise_scale)
    snapshots = patch_training(args, spec)
    config = dataclasses.replace(
        PINNConfig.profile("accurate"),
        seed=args.seed if args.init_seed is None else args.init_seed,
        threads=args.threads,
        device="cpu",
        **{"ensemble": 1, **parse_overrides(args.set)},
    )
    config = dataclasses.replace(
        config, lbfgs_iterations=args.iterations - config.adam_iterations
    ).check()
    start = time.perf_counter()
    trained = train_pinn(spec, train, heatinv_scaling(train, spec), config)
    result = {
        "experiment": {k: v for k, v in vars(args).items() if k != "out"},
        "config": dataclasses.asdict(config),
        "final": {k: round(v, 5) for k, v in score(trained, spec).items()},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "trajectory": [
            {k: h[k] for k in ("step", "loss_data", "loss_pde", "l2re") if k in h}
            for h in trained.history
        ],
    }
    evaluation = EvaluationSet.of(spec)
    result["averages"] = []
    for first in args.average_from:
        chosen = [i for i, step in enumerate(snapshots["steps"]) if step >= first]
        mean = np.mean([snapshots["fields"][i] for i in chosen], axis=0)
        average = {"from": first, "steps": len(chosen), "of_fields": {
            k: round(v, 5) for k, v in evaluation.errors(mean[:, 0], mean[:, 1]).items()},
            "of_weights": average_weights_score(snapshots, chosen, evaluation)}
        result["averages"].append(average)
        print(json.dumps(average))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["final"]), f"{result['wall_time_s']} s")
    print(" ".join(f"{h['step']}:{h['l2re']:.4f}" for h in result["trajectory"] if "l2re" in h))


def patch_training(args, spec) -> None:
    """Put the chosen variants into the PINN's training classes (this process only)."""
    evaluation = EvaluationSet.of(spec)

    metrics, loss_terms = trainer.Monitor.metrics, problem.HeatData.losses
    if args.floor_width is not None:
        losses.MISFIT_FLOOR_WIDTH = args.floor_width
    if args.warm_start_weight is not None:
        inversion.invert_spec = functools.partial(inversion.invert_spec,
                                                  weight=args.warm_start_weight)
    if args.warm_start_truth:
        inversion.invert_spec = truth_as_inversion
    snapshots = {"steps": [], "fields": [], "weights": [], "net": None}

    def metrics_with_l2re(self):
        values = metrics(self)
        net = self.model.net
        ua = fields_at(net, evaluation)
        values["l2re"] = evaluation.errors(ua[:, 0], ua[:, 1])["l2re"]
        if args.average_from and self.step >= min(args.average_from) \
                and self.step not in snapshots["steps"]:
            snapshots["steps"].append(self.step)
            snapshots["fields"].append(ua)
            snapshots["weights"].append({k: v.detach().clone() for k, v in net.state_dict().items()})
            snapshots["net"] = net
        return values

    def losses_with_penalties(self, targets, outputs, loss_fn, inputs, model, aux=None):
        terms = loss_terms(self, targets, outputs, loss_fn, inputs, model, aux)
        a = outputs[:, 1]
        penalty = torch.zeros((), dtype=a.dtype)
        if args.h1 or args.h2:
            grad_a = _grad(a, inputs, True)
            if args.h1:
                penalty = penalty + args.h1 * torch.mean(grad_a[:, 0] ** 2 + grad_a[:, 1] ** 2)
            if args.h2:
                a_xx = _grad(grad_a[:, 0], inputs, True)[:, 0]
                a_yy = _grad(grad_a[:, 1], inputs, True)[:, 1]
                penalty = penalty + args.h2 * torch.mean((a_xx + a_yy) ** 2)
        if args.u_weight_decay:
            squares = sum(torch.sum(w**2) for w in model.net.u_net.parameters())
            penalty = penalty + args.u_weight_decay * squares
        terms[0] = terms[0] + penalty  # logged with the PDE term
        return terms

    trainer.Monitor.metrics = metrics_with_l2re
    problem.HeatData.losses = losses_with_penalties
    return snapshots


def scaled_noise(observations, spec, scale: float):
    """``observations`` with their noise scaled by ``scale`` and their declared sigma kept, so
    the losses keep their units (0: the true u at the points)."""
    if scale == 1.0:
        return observations
    o = observations
    truth = spec.temperature_truth(x=o.x, y=o.y, t=o.t)
    return dataclasses.replace(o, u=truth + scale * (o.u - truth))


def truth_as_inversion(spec, observations, **_) -> types.SimpleNamespace:
    """In place of :func:`inversion.invert_spec`: the true diffusivity, for the warm start."""
    return types.SimpleNamespace(
        diffusivity=lambda x, y: spec.diffusivity_truth(x=x, y=y),
        weight=float("nan"),
        chi2_per_observation=float("nan"),
    )


def average_weights_score(snapshots, chosen: list[int], evaluation) -> dict:
    """The L2RE of the network whose weights are the mean of the chosen logged snapshots."""
    net = snapshots["net"]
    last = {k: v.clone() for k, v in net.state_dict().items()}
    weights = [snapshots["weights"][i] for i in chosen]
    mean = {k: torch.mean(torch.stack([w[k].double() for w in weights]), dim=0)
               .to(last[k].dtype) for k in last}
    net.load_state_dict(mean)
    ua = fields_at(net, evaluation)
    net.load_state_dict(last)
    return {k: round(v, 5) for k, v in evaluation.errors(ua[:, 0], ua[:, 1]).items()}


if __name__ == "__main__":
    main()
