"""Parsing survives a garbage collection whose finalizers parse too (CPython 3.11's AST depth
counter is interpreter-wide: such a collection inside ``ast.parse`` made it raise SystemError,
and made ``make test`` fail building the Dagster definitions)."""

from __future__ import annotations

import ast
import gc
import sys
from contextlib import contextmanager

import pytest

from heat_platform.assets.code_versions import code_version
from heat_platform.definitions import defs
from heat_platform.heat.formula import parse_formula
from heat_platform.parsing import parse

SOURCE = "def f(a):\n    return [(a, {a: (a, [a])}) for _ in range(3)]\n" * 50


class Litter:
    """Cyclic garbage whose finalizer parses (as a finalizer that logs a traceback does) and
    leaves new litter behind, so every collection, however frequent, finds some."""

    left = 0
    parsed = 0

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        ast.parse("x = (1, [2, {3: 4}])")
        Litter.parsed += 1
        if Litter.left > 0:
            Litter.left -= 1
            Litter()


@contextmanager
def collections_that_parse():
    """A collector that runs at every allocation, with litter waiting for it; restored before
    anything raised inside propagates (pytest's own reporting parses)."""
    threshold = gc.get_threshold()
    Litter.left, Litter.parsed = 10_000, 0
    gc.set_threshold(1)
    Litter()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        Litter.left = 0
        gc.collect()


def nested(depth: int, call):
    """``call()`` a few frames deeper, so that the finalizer's parse starts at another depth
    than the one it interrupts (as in any real program)."""
    return call() if depth == 0 else nested(depth - 1, call)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the failure shown is CPython 3.11's")
def test_the_collector_breaks_a_plain_parse():
    with pytest.raises(SystemError, match="recursion depth mismatch"), collections_that_parse():
        nested(20, lambda: ast.parse(SOURCE))


def test_the_platforms_parse_survives_it():
    with collections_that_parse():
        tree = nested(20, lambda: parse(SOURCE))
        enabled = gc.isenabled()  # the collector is back on
    assert len(tree.body) == 50 and enabled


def test_code_versions_and_formulas_survive_it():
    fn = defs.resolve_assets_def("gate_report").op.compute_fn.decorated_fn
    formula = "1 + 0.5*exp(-((x-0.5)^2 + (y-0.5)^2)/0.02)"
    with collections_that_parse():
        version = nested(20, lambda: code_version(fn))
        a = nested(20, lambda: parse_formula(formula, key="a"))
    assert Litter.parsed > 0  # the finalizers did run in between
    assert version == code_version(fn) and a(x=0.5, y=0.5) == pytest.approx(1.5)
