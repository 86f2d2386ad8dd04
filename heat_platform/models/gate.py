"""The gate: only physically consistent models that beat the current champion reach users.

A candidate is promoted when every threshold holds, it does not regress on physics against
the champion, and it improves the validation RMSE by more than a margin (or there is no
champion). Every number comes from :mod:`.scoring` on the same held-out sensors and the same
fresh collocation set for the candidate, the champion and the classical inversion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from heat_platform.heat.spec import ProblemSpec
from heat_platform.models.scoring import Scores

PROMOTE, REJECT, PENDING = "promote", "reject", "pending"


@pydantic_dataclass(frozen=True, config=ConfigDict(use_attribute_docstrings=True))
class Thresholds:
    """What a candidate must meet; every field is also a field of the gate's Dagster config."""

    max_rmse_to_noise: float = 2.0
    """Validation RMSE at most this many noise levels."""
    max_residual_relative: float = 0.2
    """RMS PDE residual / RMS source, at most."""
    max_boundary_violation: float = 0.01
    """Relative deviation from the known boundary diffusivity, at most."""
    diffusivity_range: tuple[float, float] = (1e-6, 1e6)
    """Physical range of a, unless the spec gives one."""
    min_improvement: float = 0.02
    """Relative validation-RMSE gain over the champion needed to replace it."""
    physics_tolerance: float = 0.25
    """Allowed relative growth of the PDE residual against the champion..."""
    physics_slack: float = 0.005
    """...plus this absolute amount."""
    require_approval: bool = False
    """Promotions wait for `heat-platform approve`."""


@dataclass(frozen=True)
class GateDecision:
    experiment: str
    candidate_version: str
    champion_version: str | None
    decision: str  # promote | reject | pending
    reasons: list[str]
    scores: dict[str, dict[str, float | bool | None]] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTE


def decide(experiment: str, candidate_version: str, candidate: Scores,
           champion_version: str | None, champion: Scores | None, spec: ProblemSpec,
           thresholds: Thresholds, classical: Scores | None = None) -> GateDecision:
    failures: list[str] = []
    lo, hi = spec.diffusivity_range or thresholds.diffusivity_range
    if not candidate.a_finite:
        failures.append("a(x, y) is not finite everywhere")
    if candidate.a_min < lo or candidate.a_max > hi:
        failures.append(f"a(x, y) spans [{candidate.a_min:.3g}, {candidate.a_max:.3g}], "
                        f"outside the physical range [{lo:g}, {hi:g}]")
    if not candidate.rmse_to_noise <= thresholds.max_rmse_to_noise:
        failures.append(f"validation RMSE is {candidate.rmse_to_noise:.2f} x the noise level "
                        f"(max {thresholds.max_rmse_to_noise:g})")
    if not candidate.residual_relative <= thresholds.max_residual_relative:
        failures.append(f"relative PDE residual {candidate.residual_relative:.3g} "
                        f"(max {thresholds.max_residual_relative:g})")
    if not candidate.boundary_violation <= thresholds.max_boundary_violation:
        failures.append(f"boundary diffusivity violated by {candidate.boundary_violation:.3g} "
                        f"(max {thresholds.max_boundary_violation:g})")

    passes: list[str] = []
    if champion is None:
        passes.append("no champion yet")
    else:
        allowed = (champion.residual_relative * (1 + thresholds.physics_tolerance)
                   + thresholds.physics_slack)
        if candidate.residual_relative > allowed:
            failures.append(f"physics regression: relative residual {candidate.residual_relative:.3g}"
                            f" vs champion v{champion_version}'s {champion.residual_relative:.3g}")
        if candidate.boundary_violation > champion.boundary_violation + thresholds.physics_slack:
            failures.append(f"physics regression: boundary violation {candidate.boundary_violation:.3g}"
                            f" vs champion's {champion.boundary_violation:.3g}")
        gain = 1 - candidate.validation_rmse / champion.validation_rmse \
            if champion.validation_rmse > 0 else -math.inf
        if gain <= thresholds.min_improvement:
            failures.append(f"improvement over champion v{champion_version} is {gain:+.1%} of "
                            f"validation RMSE (needs more than {thresholds.min_improvement:.0%})")
        else:
            passes.append(f"validation RMSE {gain:.1%} better than champion v{champion_version}")

    if failures:
        decision, reasons = REJECT, failures
    else:
        reasons = ["every threshold holds", *passes]
        decision = PENDING if thresholds.require_approval else PROMOTE
        if decision == PENDING:
            reasons.append("waiting for approval (require_approval)")
    scores = {"candidate": candidate.as_dict()}
    if champion is not None:
        scores["champion"] = champion.as_dict()
    if classical is not None:
        scores["classical"] = classical.as_dict()
    return GateDecision(experiment, candidate_version, champion_version, decision, reasons, scores)


ROWS = [
    ("validation RMSE of u", "validation_rmse", "{:.4g}"),
    ("RMSE / noise level", "rmse_to_noise", "{:.3g}"),
    ("relative PDE residual (RMS)", "residual_relative", "{:.3g}"),
    ("max |PDE residual|", "residual_max", "{:.3g}"),
    ("boundary a violation", "boundary_violation", "{:.3g}"),
    ("min a", "a_min", "{:.4g}"),
    ("max a", "a_max", "{:.4g}"),
    ("a finite everywhere", "a_finite", "{}"),
    ("relL2(a) vs truth", "rel_l2_a", "{:.4g}"),
]


def report_markdown(decision: GateDecision, thresholds: Thresholds, labels: dict[str, str],
                    images: str = "") -> str:
    """The gate report: decision, reasons, the three models side by side, thresholds."""
    columns = [c for c in ("candidate", "champion", "classical") if c in decision.scores]
    head = "| | " + " | ".join(labels.get(c, c) for c in columns) + " |\n"
    head += "|---|" + "---|" * len(columns) + "\n"
    body = ""
    for title, key, fmt in ROWS:
        cells = []
        for column in columns:
            value = decision.scores[column].get(key)
            cells.append("n/a" if value is None else fmt.format(value))
        body += f"| {title} | " + " | ".join(cells) + " |\n"
    verdict = {"promote": "PROMOTED", "reject": "REJECTED", "pending": "PENDING APPROVAL"}
    text = f"## Gate: {verdict[decision.decision]} v{decision.candidate_version} of " \
           f"{decision.experiment}\n\n" + "\n".join(f"- {r}" for r in decision.reasons)
    text += "\n\n" + head + body
    text += "\nThe classical inversion satisfies its own discretisation, so its residual is n/a.\n"
    text += "\nThresholds: " + ", ".join(f"{k}={v}" for k, v in asdict(thresholds).items()) + "\n"
    return text + ("\n" + images if images else "")


@dataclass(frozen=True)
class Review:
    decision: GateDecision
    report: str  # Markdown
    figure_png: bytes


def review(registry, candidate, classical, stored, spec: ProblemSpec, thresholds: Thresholds,
           *, workdir) -> Review:
    """Score the candidate, the current champion and the classical inversion on the same
    held-out sensors and collocation points, decide, and write the report."""
    import numpy as np

    from heat_platform.models import figures
    from heat_platform.models.classical import load_predict
    from heat_platform.models.scoring import (
        Readings,
        score,
        score_torchscript,
        torchscript_predict,
    )
    from heat_platform.pinn.export import load_exported

    validation = Readings.from_frame(stored.load().validation, spec)
    candidate_scores = score_torchscript(candidate.artifact, spec, validation)
    champion = registry.champion(candidate.experiment)
    if champion is not None and champion.version == candidate.version:
        champion = None  # re-judging the champion itself: compare with nothing
    champion_scores = champion_artifact = None
    if champion is not None:
        champion_artifact = registry.download(champion, workdir / f"champion-v{champion.version}")
        champion_scores = score_torchscript(champion_artifact, spec, validation)
    classical_predict = load_predict(classical.artifact)
    classical_scores = score(classical_predict, spec, validation, residual=None)

    decision = decide(candidate.experiment, candidate.version, candidate_scores,
                      champion.version if champion else None, champion_scores, spec, thresholds,
                      classical_scores)

    def a_of(path):  # a does not depend on t
        predict = torchscript_predict(load_exported(path))
        return lambda x, y: predict(x, y, np.zeros_like(x))[1]

    maps = {f"candidate v{candidate.version}": a_of(candidate.artifact)}
    if champion_artifact is not None:
        maps[f"champion v{champion.version}"] = a_of(champion_artifact)
    maps["classical inversion"] = lambda x, y: classical_predict(x, y, np.zeros_like(x))[1]
    if spec.diffusivity_truth is not None:
        maps["truth (synthetic)"] = lambda x, y: spec.diffusivity_truth(x=x, y=y)
    png = figures.png_bytes(figures.diffusivity_maps(maps, spec.domain.bounds(),
                                                     f"{candidate.experiment}: a(x, y)"))
    labels = {"candidate": f"candidate v{candidate.version}",
              "champion": f"champion v{champion.version}" if champion else "champion",
              "classical": "classical inversion"}
    report = report_markdown(decision, thresholds, labels,
                             figures.markdown_image(png, "a(x, y): candidate, champion, classical"))
    return Review(decision, report, png)
