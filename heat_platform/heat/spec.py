"""Problem specifications: what an experiment's ``problem.yaml`` says, checked and typed.

The one place that parses problem specs. A spec names the experiment, its space-time box and
the formulas of the inverse heat problem u_t - div(a grad u) = f::

    name: pinnacle-heatinv            # required, [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
    description: free text
    domain: {x: [-1, 1], y: [-1, 1], t: [0, 1]}      # required, lo < hi, finite
    source: "exp(-t) * (...)"                        # required, f(x, y, t)
    boundary_diffusivity: 2                          # a on the spatial boundary, (x, y)
    boundary_temperature: "..."                      # Dirichlet u, (x, y, t)
    initial_temperature: "..."                       # u at t0, (x, y)
    diffusivity_truth: "2 + sin(pi*x)*sin(pi*y)"     # synthetic experiments only, (x, y)
    temperature_truth: "exp(-t)*sin(pi*x)*sin(pi*y)" # manufactured solutions only, (x, y, t)
    noise_sigma: 0.1                                 # > 0, used when a batch has no sigma
    temperature_range: [-10, 10]                     # lo < hi
    diffusivity_range: [0.01, 100]                   # 0 <= lo < hi

Files are untrusted: ``yaml.safe_load`` semantics, a size limit, no anchors/aliases (so no
billion-laughs bombs), no duplicate keys, and formulas go through :mod:`.formula`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from heat_platform.heat.formula import Formula, FormulaError, parse_formula
from heat_platform.names import EXPERIMENT_NAME

MAX_BYTES = 64 * 1024
MAX_NESTING = 10  # a spec needs 3 levels (document, domain, bounds)
DOCUMENT = "problem.yaml"  # the "key" of errors about the document as a whole
REQUIRED = ("name", "domain", "source")
# Formula keys and the variables each may use; dict order is the order of to_dict/to_yaml.
FORMULAS = {
    "source": ("x", "y", "t"),
    "boundary_diffusivity": ("x", "y"),
    "boundary_temperature": ("x", "y", "t"),
    "initial_temperature": ("x", "y"),
    "diffusivity_truth": ("x", "y"),
    "temperature_truth": ("x", "y", "t"),
}
KEYS = (
    "name",
    "description",
    "domain",
    *FORMULAS,
    "noise_sigma",
    "temperature_range",
    "diffusivity_range",
)


class SpecError(ValueError):
    """A problem spec was rejected; ``key`` names where (``token`` is set for formula errors)."""

    def __init__(self, key: str, message: str, token: str | None = None):
        super().__init__(message if message.startswith(f"{key}: ") else f"{key}: {message}")
        self.key, self.message, self.token = key, message, token

    def __reduce__(self):
        return type(self), (self.key, self.message, self.token)


@dataclass(frozen=True)
class Domain:
    """The closed space-time box [x0, x1] x [y0, y1] x [t0, t1]."""

    x: tuple[float, float]
    y: tuple[float, float]
    t: tuple[float, float]

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {"x": self.x, "y": self.y, "t": self.t}

    def contains(self, x, y, t) -> np.ndarray:
        """Elementwise: is (x, y, t) inside the box, edges included."""
        x, y, t = np.asarray(x), np.asarray(y), np.asarray(t)
        (x0, x1), (y0, y1), (t0, t1) = self.x, self.y, self.t
        return (x0 <= x) & (x <= x1) & (y0 <= y) & (y <= y1) & (t0 <= t) & (t <= t1)


@dataclass(frozen=True)
class ProblemSpec:
    """One experiment's problem; build it with :func:`parse_spec`, :func:`load_spec` or
    :func:`spec_from_yaml`, which check everything (the constructor checks nothing)."""

    name: str
    domain: Domain
    source: Formula
    boundary_diffusivity: Formula | None = None
    boundary_temperature: Formula | None = None
    initial_temperature: Formula | None = None
    diffusivity_truth: Formula | None = None
    temperature_truth: Formula | None = None
    noise_sigma: float | None = None
    temperature_range: tuple[float, float] | None = None
    diffusivity_range: tuple[float, float] | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :func:`parse_spec` turns back into an equal spec; unset keys left out."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["domain"] = {name: list(bounds) for name, bounds in self.domain.bounds().items()}
        for key in FORMULAS:
            if (formula := getattr(self, key)) is not None:
                data[key] = formula.text
        if self.noise_sigma is not None:
            data["noise_sigma"] = self.noise_sigma
        for key in ("temperature_range", "diffusivity_range"):
            if (value := getattr(self, key)) is not None:
                data[key] = list(value)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            self.to_dict(), sort_keys=False, default_flow_style=None, width=120, allow_unicode=True
        )

    @property
    def sha256(self) -> str:
        """Hash of the content: yaml layout, key order and blanks inside formulas do not change
        it (``x^2`` and ``x ** 2`` hash alike); any change to a value does."""
        data = self.to_dict()
        for key in FORMULAS:
            if key in data:
                data[key] = getattr(self, key).canonical
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_spec(data: dict) -> ProblemSpec:
    """Check plain data (as loaded from yaml) and build the spec; raises :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(DOCUMENT, f"must be a mapping of keys to values, got {_kind(data)}")
    if unknown := [key for key in data if key not in KEYS]:
        key = _key_name(unknown[0])
        guess = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise SpecError(key, f"unknown key; {hint}(known keys: {', '.join(KEYS)})")
    # An explicit null counts as absent, so `boundary_temperature:` with no value is harmless.
    data = {key: value for key, value in data.items() if value is not None}
    if missing := [key for key in REQUIRED if key not in data]:
        raise SpecError(missing[0], "is required")

    name = data["name"]
    if not isinstance(name, str) or not EXPERIMENT_NAME.fullmatch(name):
        raise SpecError(
            "name", f"must match {EXPERIMENT_NAME.pattern} (quote numbers), got {_describe(name)}"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError("description", f"must be text, got {_kind(description)}")

    formulas = {}
    for key, allowed in FORMULAS.items():
        if key in data:
            try:
                formulas[key] = parse_formula(data[key], key=key, allowed=allowed)
            except FormulaError as error:
                raise SpecError(key, str(error), error.token) from error

    noise_sigma = None
    if "noise_sigma" in data:
        noise_sigma = _number(data["noise_sigma"], "noise_sigma")
        if noise_sigma <= 0:
            raise SpecError("noise_sigma", f"must be > 0, got {noise_sigma}")
    diffusivity_range = _optional_interval(data, "diffusivity_range")
    if diffusivity_range is not None and diffusivity_range[0] < 0:
        raise SpecError("diffusivity_range", f"must have lo >= 0, got {diffusivity_range[0]}")

    return ProblemSpec(
        name=name,
        description=description,
        domain=_domain(data["domain"]),
        **formulas,
        noise_sigma=noise_sigma,
        temperature_range=_optional_interval(data, "temperature_range"),
        diffusivity_range=diffusivity_range,
    )


def spec_from_yaml(text: str) -> ProblemSpec:
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise SpecError(DOCUMENT, f"is larger than {MAX_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader, see below
    except yaml.YAMLError as error:
        raise SpecError(DOCUMENT, f"is not valid YAML: {error}") from None
    except ValueError as error:  # e.g. a date 2024-13-45, an integer of 5000 digits
        raise SpecError(DOCUMENT, f"has a value YAML cannot represent: {error}") from None
    return parse_spec(data)


def load_spec(path: str | Path) -> ProblemSpec:
    """Read and parse a problem.yaml; never reads more than :data:`MAX_BYTES` + 1 bytes."""
    try:
        with open(path, "rb") as file:  # bounded read: also safe on /dev/zero or a growing file
            raw = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise SpecError(DOCUMENT, f"cannot be read: {error}") from None
    if len(raw) > MAX_BYTES:
        raise SpecError(DOCUMENT, f"{path} is larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(DOCUMENT, f"{path} is not UTF-8 text: {error}") from None
    return spec_from_yaml(text)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, minus aliases and duplicate keys, which a problem spec never needs.

    Aliases are what billion-laughs bombs are made of: the loaded object graph stays small,
    but anything that walks it (a repr in an error message, json.dumps) expands it.
    """

    depth = 0

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not allowed", mark
            )
        if self.depth >= MAX_NESTING:  # composing recurses; [[[[... would hit RecursionError
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING}", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
        if duplicates := sorted({key for key in keys if keys.count(key) > 1}):
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {duplicates[0]!r}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 1e-3 as a string, a classic trap for diffusivities; read it as
# YAML 1.2 does. Quoted numbers stay strings and are rejected where a number is expected.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _domain(value: Any) -> Domain:
    if not isinstance(value, dict):
        raise SpecError(
            "domain", f"must be a mapping {{x: [lo, hi], y: ..., t: ...}}, got {_kind(value)}"
        )
    if unknown := [key for key in value if key not in ("x", "y", "t")]:
        raise SpecError(f"domain.{_key_name(unknown[0])}", "unknown coordinate (use x, y, t)")
    for key in ("x", "y", "t"):
        if key not in value:
            raise SpecError(f"domain.{key}", "is required")
    return Domain(**{key: _interval(value[key], f"domain.{key}") for key in ("x", "y", "t")})


def _optional_interval(data: dict, key: str) -> tuple[float, float] | None:
    return _interval(data[key], key) if key in data else None


def _interval(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise SpecError(key, f"must be a pair [lo, hi], got {_kind(value)}")
    lo, hi = (_number(bound, key) for bound in value)
    if not lo < hi:
        raise SpecError(key, f"must have lo < hi, got [{lo}, {hi}]")
    return lo, hi


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(key, f"must be a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # a yaml integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise SpecError(key, f"must be finite, got {_describe(value)}")
    return number


def _kind(value: Any) -> str:
    """A short description that never walks a (possibly huge) container."""
    if isinstance(value, list | tuple | dict):
        return f"a {type(value).__name__} of {len(value)} items"
    return _describe(value)


def _key_name(key: Any) -> str:
    return _abbreviate(key) if isinstance(key, str) else _describe(key)


def _describe(value: Any) -> str:
    if isinstance(value, int) and abs(value) > 10**60:
        return "an integer with more than 60 digits"  # repr of huge ints is slow or refused
    if isinstance(value, str | int | float | bool) or value is None:
        return _abbreviate(repr(value))
    return f"a {type(value).__name__}"


def _abbreviate(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
