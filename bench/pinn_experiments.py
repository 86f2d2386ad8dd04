"""Experiments on the PINN's training that are not (yet) part of train_pinn, with the L2RE recorded
along the way: the rows of bench/pinn_accuracy.py's docstring table that name this script.

Run from the repository root (one thread by default, so two experiments can run side by side
on 2 cores):
    .venv/bin/python bench/pinn_experiments.py --seed 2 --iterations 3000 [--h1 W] [--h2 W]
        [--u-weight-decay W] [--init-seed N] [--set name=value ...] [--out PATH]

Each run trains one network of the accurate profile (``PINNConfig.accurate()`` with
``ensemble=1``: the profile's members are such runs from other seeds, ``--init-seed``; ``--set``
overrides fields; ``--iterations`` is Adam's 500 plus L-BFGS) on PINNacle HeatInv with noise
seed ``--seed`` and writes the final scores and the trajectory (every ``log_every`` steps: data
misfit, PDE loss and the PINNacle L2RE at bench/pinn_accuracy.py's evaluation points) as JSON.
The truth is used for scoring only.

The variants change private parts of heat_platform.pinn.pinn in this process only (the loss,
the network's initialisation, the start of a phase), so this script is an exploration tool:
what proves itself here moves into ``train_pinn`` with a config field and tests. The warm
start of a from the classical inversion and the freezing of a during Adam did, and are config
fields now (``--set warm_start_a=false freeze_a_steps=0`` for the plain runs).

* ``--h1 W`` / ``--h2 W``: add W mean|grad a|^2 / W mean(lap a)^2 at the collocation and
  observation points to the PDE term (physical units);
* ``--u-weight-decay W``: add W times the sum of the squared weights of the u-network;
* ``--init-seed N``: initialise the networks (and draw collocation points) with N instead of the
  noise seed, for ensembles over initialisations;
* ``--warm-start-weight W``: warm-start a from the classical inversion at the fixed penalty
  weight W (bench/pinn_accuracy.py's ``ORACLE_WEIGHTS``) instead of the discrepancy principle's;
* ``--warm-start-truth``: warm-start a from the TRUE diffusivity instead of the classical
  inversion (a diagnostic, like the oracle: does training stay at the truth, or does the loss
  on this noise draw pull a away from it?);
* ``--average-from S [S ...]``: also score, for each S, the mean over the logged steps from S to
  the end of the (u, a) fields and of the networks' weights (snapshot averaging).
* ``--noise-scale F``: scale the drawn noise by F and keep the declared sigma (0: noise-free
  data, with ``--set misfit_floor=0``; a diagnostic of the PINN's own bias);
* ``--floor-width W``: the width of the data misfit's soft floor (``MISFIT_FLOOR_WIDTH``, 0.01;
  ``--set misfit_floor=0`` turns the floor off).
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

from heat_platform.pinn import inversion, pinn
from heat_platform.pinn.heatinv import heatinv_observations, heatinv_scaling, heatinv_spec
from heat_platform.pinn.physics import _grad
from heat_platform.pinn.pinn import PINNConfig, _deepxde_parts, _import_deepxde, train_pinn

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
    _import_deepxde()
    spec = heatinv_spec()
    train = scaled_noise(heatinv_observations(noise_seed=args.seed, spec=spec), spec,
                         args.noise_scale)
    snapshots = patch_training(args, spec)
    config = dataclasses.replace(
        PINNConfig.accurate(),
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
    """Put the chosen variants into heat_platform.pinn.pinn's DeepXDE parts (this process)."""
    parts = _deepxde_parts()
    evaluation = EvaluationSet.of(spec)

    metrics, losses = parts.Monitor.metrics, parts.HeatData.losses
    if args.floor_width is not None:
        pinn.MISFIT_FLOOR_WIDTH = args.floor_width
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
        terms = losses(self, targets, outputs, loss_fn, inputs, model, aux)
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

    parts.Monitor.metrics = metrics_with_l2re
    parts.HeatData.losses = losses_with_penalties
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
