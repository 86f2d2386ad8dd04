"""The gate: the best physically consistent model of any kind reaches users, never a worse one.

Every training run brings candidates of two kinds, a PINN and the classical inversion of the
same training set; the current champion (of either kind) is scored again on the same held-out
sensors and collocation points, so on the data that is current now (after a drift episode: the
new regime). Then:

1. **Thresholds.** A model *passes* when its a(x, y) is finite and physical, its held-out RMSE is
   at most ``max_rmse_to_noise`` noise levels, its relative PDE residual at most
   ``max_residual_relative`` (a PINN's; a classical fit solves its own discretisation by
   construction) and the known boundary diffusivity holds. A held-out RMSE far below
   the noise (``min_rmse_to_noise``) is flagged: the declared noise level is then larger than the
   readings' real noise, and a fit that trusts it over-smooths u and a.
2. **Between the kinds.** Of two passing candidates the classical fit is kept unless the PINN is
   better on held-out RMSE by more than ``min_improvement``, or within that margin and better
   on a: on relL2(a) where a true diffusivity is known (synthetic experiments), else on a
   through the solver: the held-out RMSE of the classical solver's u for each model's a
   (:func:`.scoring.solver_fit`), the one measure of a that is the same for both kinds (their
   own PDE residuals are not: a classical u solves its discretisation by construction, so the
   residual favoured it in every tie of the scenario suite, whatever its a). Without a truth,
   a PINN whose own held-out fit is worse by more than the margin (a difference the sensors
   do not resolve) keeps the classical fit: data-borne evidence on a does not outweigh a worse
   served u. The PDE residual decides only where a through the solver was not scored. A
   difference beyond the margin that the held-out sensors do not resolve counts as
   within it: both models are scored on the same readings, so their errors are compared sensor
   by sensor (a paired t-test over the held-out sensors, at ``fit_confidence``; a sensor's
   readings share its systematic error, so the sensors are the independent units).
3. **Against the champion.** A champion that fails the thresholds on the current data is
   *stale*: it stops being the reference and the best passing candidate is promoted. A passing
   champion is replaced only by a candidate better on held-out RMSE by more than
   ``min_improvement`` that does not regress on physics. When nothing passes and the champion
   is stale, the decision says the served model is stale.

Every number comes from :mod:`.scoring`; the decision records which kinds competed and why the
winner won.
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
    min_rmse_to_noise: float = 0.7
    """A validation RMSE below this many noise levels is flagged: the declared noise level is
    larger than the real noise, and fits that trust it over-smooth u and a."""
    max_residual_relative: float = 0.2
    """RMS PDE residual over the RMS size of the terms it balances, at most."""
    max_boundary_violation: float = 0.01
    """Relative deviation from the known boundary diffusivity, at most."""
    diffusivity_range: tuple[float, float] = (1e-6, 1e6)
    """Physical range of a, unless the spec gives one."""
    min_improvement: float = 0.02
    """Relative validation-RMSE gain needed to replace a champion (and for a PINN to replace a
    classical fit on data alone)."""
    fit_confidence: float = 0.95
    """Between a PINN and a classical fit: confidence at which a held-out RMSE difference beyond
    ``min_improvement`` counts as real (paired over the held-out sensors); one the sensors do
    not resolve is judged like one within the margin, on a. 0: the margin alone."""
    physics_tolerance: float = 0.25
    """Allowed relative growth of the PDE residual against the champion..."""
    physics_slack: float = 0.005
    """...plus this absolute amount."""
    require_approval: bool = False
    """Promotions wait for `heat-platform approve`."""


@dataclass(frozen=True)
class Contender:
    """A model the gate judges: a new candidate or the current champion, with its scores."""

    label: str  # how the report names it: "PINN", "classical", "champion"
    kind: str  # "pinn" or "classical"
    version: str
    scores: Scores


@dataclass(frozen=True)
class GateDecision:
    experiment: str
    candidate_version: str  # the promoted (or pending) version; else the PINN that was judged
    champion_version: str | None
    decision: str  # promote | reject | pending
    reasons: list[str]
    scores: dict[str, dict[str, float | bool | None]] = field(default_factory=dict)
    candidate_kind: str = "pinn"
    # every contender: label, kind, version, passed, failures, warnings
    competed: list[dict] = field(default_factory=list)
    stale_champion: bool = False  # the champion fails the thresholds on the current data
    # the PINN failed on its fit, or lost on it (held-out RMSE worse than the served model's by
    # more than the margin): a stronger profile may do better
    escalate: bool = False

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTE

    def failed_versions(self) -> dict[str, list[str]]:
        """The new versions that failed a threshold, with their failures (to tag as rejected)."""
        return {c["version"]: c["failures"] for c in self.competed
                if c["label"] != "champion" and c["failures"]}


def threshold_failures(scores: Scores, spec: ProblemSpec, thresholds: Thresholds,
                       kind: str = "pinn") -> list[str]:
    """What keeps a model from passing (empty: it passes). A classical fit solves its own
    discretisation by construction: its residual (finite differences between its nodes) is
    reported and breaks ties, but is no threshold."""
    failures: list[str] = []
    lo, hi = spec.diffusivity_range or thresholds.diffusivity_range
    if not scores.a_finite:
        failures.append("a(x, y) is not finite everywhere")
    if scores.a_min < lo or scores.a_max > hi:
        failures.append(f"a(x, y) spans [{scores.a_min:.3g}, {scores.a_max:.3g}], "
                        f"outside the physical range [{lo:g}, {hi:g}]")
    if not scores.rmse_to_noise <= thresholds.max_rmse_to_noise:
        failures.append(f"validation RMSE is {scores.rmse_to_noise:.2f} x the noise level "
                        f"(max {thresholds.max_rmse_to_noise:g})")
    if kind != "classical" and scores.residual_relative is not None \
            and not scores.residual_relative <= thresholds.max_residual_relative:
        failures.append(f"relative PDE residual {scores.residual_relative:.3g} "
                        f"(max {thresholds.max_residual_relative:g})")
    if not scores.boundary_violation <= thresholds.max_boundary_violation:
        failures.append(f"boundary diffusivity violated by {scores.boundary_violation:.3g} "
                        f"(max {thresholds.max_boundary_violation:g})")
    return failures


def flags(scores: Scores, thresholds: Thresholds) -> list[str]:
    """What a passing model should not hide."""
    if scores.rmse_to_noise < thresholds.min_rmse_to_noise:
        return [f"validation RMSE is only {scores.rmse_to_noise:.2f} x the noise level: the "
                "declared noise level looks larger than the readings' real noise (fits that "
                "trust it over-smooth u and a); declare the real sigma"]
    return []


def decide(experiment: str, candidates: list[Contender], champion: Contender | None,
           spec: ProblemSpec, thresholds: Thresholds) -> GateDecision:
    """The gate's decision (module docstring) between ``candidates`` and the ``champion``."""
    everyone = [*candidates, *([champion] if champion else [])]
    competed = [{"label": c.label, "kind": c.kind, "version": c.version,
                 "failures": threshold_failures(c.scores, spec, thresholds, c.kind),
                 "warnings": flags(c.scores, thresholds)} for c in everyone]
    failures_of = {c["label"]: c["failures"] for c in competed}
    scores = {c.label: c.scores.as_dict() for c in everyone}
    stale = champion is not None and bool(failures_of["champion"])

    reasons: list[str] = []
    incumbent = champion if champion is not None and not stale else None
    if stale:
        reasons.append(f"champion v{champion.version} fails on the current data and is no "
                       f"longer the reference: {'; '.join(failures_of['champion'])}")
    # the classical fit challenges first, then the PINN challenges whoever holds
    for challenger in sorted(candidates, key=lambda c: c.kind != "classical"):
        if failures_of[challenger.label]:
            continue
        if incumbent is None:
            incumbent = challenger
            continue
        wins, why = _challenge(incumbent, challenger, thresholds)
        reasons.append(why)
        if wins:
            incumbent = challenger

    pinn = next((c for c in candidates if c.kind == "pinn"), candidates[0])
    # a stronger profile may help a PINN that failed on its fit, or lost on it: worse than the
    # served model by more than the margin, and by more than the held-out sensors can blur
    lost_on_fit = incumbent is not None and incumbent is not pinn and _lost_on_fit(
        compare_fit(pinn.scores, incumbent.scores, thresholds.fit_confidence), thresholds)
    escalate = pinn.kind == "pinn" and incumbent is not pinn and (
        any("noise level" in f or "residual" in f for f in failures_of[pinn.label])
        or lost_on_fit)
    if incumbent is None or incumbent is champion:
        if incumbent is None:
            reasons = _why_none_passed(candidates, failures_of) + reasons[:1]
            if stale:
                reasons.append(f"the served model v{champion.version} is stale: it fails on "
                               "the current data and no candidate passes")
        return GateDecision(experiment, pinn.version, champion.version if champion else None,
                            REJECT, reasons, scores, pinn.kind, competed, stale, escalate)
    reasons.insert(0, "every threshold holds")
    if champion is None:
        reasons.append("no champion yet")
    decision = PENDING if thresholds.require_approval else PROMOTE
    if decision == PENDING:
        reasons.append("waiting for approval (require_approval)")
    return GateDecision(experiment, incumbent.version, champion.version if champion else None,
                        decision, reasons, scores, incumbent.kind, competed, stale, escalate)


def _challenge(incumbent: Contender, challenger: Contender,
               thresholds: Thresholds) -> tuple[bool, str]:
    """Does ``challenger`` (passing) replace ``incumbent`` (passing), and why."""
    new, old = challenger.scores, incumbent.scores
    who = f"{challenger.label} v{challenger.version}"
    against = f"{incumbent.label} v{incumbent.version}"
    margin = thresholds.min_improvement
    fit = compare_fit(new, old, thresholds.fit_confidence)
    gain = fit.gain
    if challenger.kind == "pinn" and incumbent.kind == "classical" \
            and (abs(gain) <= margin or not fit.resolved):
        # within the margin on data, or a difference the sensors do not resolve: the better a
        # wins (rule 2)
        within = (f"{who}'s validation RMSE is within {margin:.0%} of {against}'s ({gain:+.1%})"
                  if abs(gain) <= margin else
                  f"{who}'s validation RMSE differs from {against}'s by {gain:+.1%}, which "
                  f"{fit.unresolved()}")
        if new.rel_l2_a is not None and old.rel_l2_a is not None:
            wins = new.rel_l2_a < old.rel_l2_a
            return wins, (f"{within}; relL2(a) {new.rel_l2_a:.3g} against {old.rel_l2_a:.3g}: "
                          f"{who if wins else against} has the better a")
        if new.solver_rmse_to_noise is not None and old.solver_rmse_to_noise is not None:
            if gain < -margin:  # its own u is worse by more than the margin, unresolved
                return False, (f"{within}; without a truth, a through the solver "
                               f"({new.solver_rmse_to_noise:.3g} against "
                               f"{old.solver_rmse_to_noise:.3g} noise levels) does not outweigh "
                               f"a served u worse by more than {margin:.0%}: {against} stays")
            wins = new.solver_rmse_to_noise < old.solver_rmse_to_noise
            return wins, (f"{within}; through the solver, its a fits the held-out readings at "
                          f"{new.solver_rmse_to_noise:.3g} noise levels against "
                          f"{old.solver_rmse_to_noise:.3g}: {who if wins else against}'s a "
                          "explains the data better")
        wins = (new.residual_relative or math.inf) < (old.residual_relative or math.inf)
        return wins, (f"{within}; PDE residual {new.residual_relative:.3g} against "
                      f"{old.residual_relative:.3g}: {who if wins else against} satisfies the "
                      "physics better")
    if gain <= margin:
        if incumbent.label == "champion":
            return False, (f"improvement over champion v{incumbent.version} is {gain:+.1%} of "
                           f"validation RMSE (needs more than {margin:.0%})")
        return False, (f"{against} stays: {who}'s validation RMSE is {gain:+.1%} against it "
                       f"(needs more than {margin:.0%}){fit.evidence()}")
    regression = _physics_regression(new, old, incumbent, thresholds,
                                     same_kind=challenger.kind == incumbent.kind)
    if regression:
        return False, regression
    if incumbent.label == "champion":
        return True, f"validation RMSE {gain:.1%} better than champion v{incumbent.version}"
    return True, f"{who}'s validation RMSE is {gain:.1%} better than {against}'s{fit.evidence()}"


@dataclass(frozen=True)
class FitComparison:
    """Two models' held-out fits, compared on the same readings."""

    gain: float  # 1 - new RMSE / old RMSE: > 0 when the new model fits better
    sensors: int  # held-out sensors paired (0: no per-sensor errors, the margin alone decides)
    t: float | None = None  # paired t statistic of the per-sensor MSE difference (old - new)
    critical: float | None = None  # |t| above this is a real difference at the confidence
    resolved: bool = True  # the sensors tell the two fits apart (or nothing to test with)

    def evidence(self) -> str:
        return (f" (paired t {self.t:+.2f} over {self.sensors} held-out sensors)"
                if self.t is not None else "")

    def unresolved(self) -> str:
        if self.t is None:
            return f"{self.sensors} held-out sensor cannot resolve"
        return (f"its {self.sensors} held-out sensors do not resolve (paired t {self.t:+.2f}, "
                f"|t| > {self.critical:.2f} needed)")


def compare_fit(new: Scores, old: Scores, confidence: float) -> FitComparison:
    """Is ``new``'s held-out fit really different from ``old``'s? Both were scored on the same
    readings, so the noise common to them cancels in the per-sensor difference of mean squared
    errors; a sensor's readings share its systematic error, so the test is over sensors: the
    readings-weighted mean difference (= the difference of the two MSEs) over its cluster-robust
    standard error, against Student's t with sensors - 1 degrees of freedom."""
    gain = 1 - new.validation_rmse / old.validation_rmse if old.validation_rmse > 0 \
        else -math.inf
    paired = (new.sensor_mse and len(new.sensor_mse) == len(old.sensor_mse)
              and new.sensor_readings == old.sensor_readings)
    if not paired or confidence <= 0 or not math.isfinite(gain):
        return FitComparison(gain, 0)
    import numpy as np
    from scipy import stats

    sensors = len(new.sensor_mse)
    if sensors < 2:
        return FitComparison(gain, sensors, resolved=False)
    weight = np.asarray(new.sensor_readings, dtype=float)
    weight /= weight.sum()
    difference = np.asarray(old.sensor_mse) - np.asarray(new.sensor_mse)
    mean = float(weight @ difference)
    spread = math.sqrt(sensors / (sensors - 1) * float(weight**2 @ (difference - mean) ** 2))
    critical = float(stats.t.ppf(0.5 + confidence / 2, sensors - 1))
    t = mean / spread if spread > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return FitComparison(gain, sensors, t, critical, abs(t) > critical)


def _lost_on_fit(fit: FitComparison, thresholds: Thresholds) -> bool:
    return fit.gain < -thresholds.min_improvement and fit.resolved


def _physics_regression(new: Scores, old: Scores, incumbent: Contender, thresholds: Thresholds,
                        same_kind: bool) -> str | None:
    # residuals are compared within a kind: a PINN's (automatic differentiation) and a
    # classical fit's (finite differences between its nodes) measure different things
    if same_kind and new.residual_relative is not None and old.residual_relative is not None:
        allowed = old.residual_relative * (1 + thresholds.physics_tolerance) \
            + thresholds.physics_slack
        if new.residual_relative > allowed:
            return (f"physics regression: relative residual {new.residual_relative:.3g} vs "
                    f"{incumbent.label} v{incumbent.version}'s {old.residual_relative:.3g}")
    if new.boundary_violation > old.boundary_violation + thresholds.physics_slack:
        return (f"physics regression: boundary violation {new.boundary_violation:.3g} vs "
                f"{incumbent.label} v{incumbent.version}'s {old.boundary_violation:.3g}")
    return None


def _why_none_passed(candidates: list[Contender], failures_of: dict[str, list[str]]) -> list[str]:
    if len(candidates) == 1:
        return list(failures_of[candidates[0].label])
    return [f"{c.label} v{c.version}: {failure}" for c in candidates
            for failure in failures_of[c.label]]


ROWS = [
    ("kind", None, "{}"),
    ("validation RMSE of u", "validation_rmse", "{:.4g}"),
    ("RMSE / noise level", "rmse_to_noise", "{:.3g}"),
    ("relative PDE residual (RMS)", "residual_relative", "{:.3g}"),
    ("RMSE / noise of its a through the solver", "solver_rmse_to_noise", "{:.3g}"),
    ("max |PDE residual|", "residual_max", "{:.3g}"),
    ("boundary a violation", "boundary_violation", "{:.3g}"),
    ("min a", "a_min", "{:.4g}"),
    ("max a", "a_max", "{:.4g}"),
    ("a finite everywhere", "a_finite", "{}"),
    ("relL2(a) vs truth", "rel_l2_a", "{:.4g}"),
]


def report_markdown(decision: GateDecision, thresholds: Thresholds, images: str = "") -> str:
    """The gate report: decision, reasons, every contender side by side, thresholds."""
    columns = [c for c in decision.competed]
    head = "| | " + " | ".join(f"{c['label']} v{c['version']}" for c in columns) + " |\n"
    head += "|---|" + "---|" * len(columns) + "\n"
    body = ""
    for title, key, fmt in ROWS:
        cells = []
        for column in columns:
            value = column["kind"] if key is None else decision.scores[column["label"]].get(key)
            cells.append("n/a" if value is None else fmt.format(value))
        body += f"| {title} | " + " | ".join(cells) + " |\n"
    body += "| passes | " + " | ".join("yes" if not c["failures"] else "no" for c in columns) \
        + " |\n"
    verdict = {"promote": "PROMOTED", "reject": "REJECTED", "pending": "PENDING APPROVAL"}
    text = (f"## Gate: {verdict[decision.decision]} v{decision.candidate_version} "
            f"({decision.candidate_kind}) of {decision.experiment}\n\n"
            + "\n".join(f"- {r}" for r in decision.reasons))
    text += "\n\nCompeted: " + ", ".join(f"{c['label']} ({c['kind']}) v{c['version']}"
                                          for c in columns) + ".\n\n" + head + body
    notes = [f"- {c['label']} v{c['version']}: {w}" for c in columns for w in c["warnings"]]
    notes += [f"- {c['label']} v{c['version']} fails: {'; '.join(c['failures'])}"
              for c in columns if c["failures"]]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    text += ("\nResiduals: a PINN's by automatic differentiation, a classical fit's by finite "
             "differences at its grid spacing (its fields are piecewise linear).\n")
    text += "\nThresholds: " + ", ".join(f"{k}={v}" for k, v in asdict(thresholds).items()) + "\n"
    return text + ("\n" + images if images else "")


@dataclass(frozen=True)
class Review:
    decision: GateDecision
    report: str  # Markdown
    figure_png: bytes
    artifacts: dict[str, object] = field(default_factory=dict)  # label -> local model file


LABELS = {"pinn": "PINN", "classical": "classical"}


def review(registry, candidates: list, stored, spec: ProblemSpec, thresholds: Thresholds,
           *, workdir) -> Review:
    """Score the candidates (``ModelCandidate`` s of the new training: a PINN, the classical
    fit) and the current champion on the same held-out sensors and collocation points, decide,
    and write the report with the a(x, y) of each side by side."""
    from heat_platform.models import figures
    from heat_platform.models.scoring import (
        Readings,
        diffusivity_of,
        load_model,
        score_torchscript,
        torchscript_predict,
    )

    experiment = candidates[0].experiment
    training_set = stored.load()
    validation = Readings.from_frame(training_set.validation, spec)
    train = Readings.from_frame(training_set.train, spec)
    champion = registry.champion(experiment)
    # a candidate that is already the champion (a classical fit promoted before a PINN of the
    # same training set was escalated, a gate run again) competes as the champion
    new = [c for c in candidates if champion is None or c.version != champion.version]
    if not new:  # re-judging the champion itself: compare with nothing
        new, champion = candidates, None
    candidates = new
    contenders = [Contender(LABELS[c.kind], c.kind, c.version,
                            score_torchscript(c.artifact, spec, validation, train=train))
                   for c in candidates]
    artifacts = {LABELS[c.kind]: c.artifact for c in candidates}
    champion_contender = None
    if champion is not None:
        artifacts["champion"] = registry.download(champion,
                                                  workdir / f"champion-v{champion.version}")
        champion_contender = Contender("champion", champion.kind, champion.version,
                                       score_torchscript(artifacts["champion"], spec, validation,
                                                         train=train))
    decision = decide(experiment, contenders, champion_contender, spec, thresholds)

    versions = {c["label"]: c["version"] for c in decision.competed}
    maps = {f"{label} v{versions[label]}": diffusivity_of(torchscript_predict(load_model(path)[0]))
            for label, path in artifacts.items()}
    if spec.diffusivity_truth is not None:
        maps["truth (synthetic)"] = lambda x, y: spec.diffusivity_truth(x=x, y=y)
    png = figures.png_bytes(figures.diffusivity_maps(maps, spec.domain.bounds(),
                                                     f"{experiment}: a(x, y)"))
    report = report_markdown(decision, thresholds,
                             figures.markdown_image(png, "a(x, y) of every contender"))
    return Review(decision, report, png, artifacts)
