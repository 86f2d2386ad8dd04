"""Safe formulas: what is rejected (and how the error reads), numpy/torch agreement, autograd."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch

from heat_platform.heat.formula import Formula, FormulaError, parse_formula

# PINNacle HeatInv: u = exp(-t) sin(pi x) sin(pi y), a = 2 + sin(pi x) sin(pi y) on [-1, 1]^2 x [0, 1].
HEATINV_U = "exp(-t)*sin(pi*x)*sin(pi*y)"
HEATINV_A = "2 + sin(pi*x)*sin(pi*y)"
HEATINV_SOURCE = (
    "exp(-t) * ((4*pi**2 - 1)*sin(pi*x)*sin(pi*y) + pi**2*(2*sin(pi*x)**2*sin(pi*y)**2"
    " - cos(pi*x)**2*sin(pi*y)**2 - sin(pi*x)**2*cos(pi*y)**2))"
)


def points(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, n), "y": rng.uniform(-1, 1, n), "t": rng.uniform(0, 1, n)}


# (formula, offending token); every one must be rejected with key and token in the message.
MALICIOUS = [
    ("__import__('os').system('ls')", "__import__"),
    ("x.__class__", "x.__class__"),
    ("().__class__.__bases__", "().__class__.__bases__"),
    ("lambda: 1", "lambda"),
    ("open('/etc/passwd')", "open"),
    ("eval('1')", "eval"),
    ("[x for x in y]", "[x for x in y]"),
    ("x if y else t", "x if y else t"),
    ("'abc'", "'abc'"),
    ("b'abc'", "b'abc'"),
    ('f"{x}"', 'f"{x}"'),
    ("x[0]", "x[0]"),
    ("a := 1", ":"),  # a syntax error without parentheses
    ("(a := 1)", ":="),
    ("sin(x, y)", "sin"),
    ("min(x)", "min"),
    ("z + 1", "z"),
    ("sin(x=1)", "x=1"),
    ("sin(*x)", "*x"),
    ("f()()", "f"),
    ("sin(x)(y)", "sin(x)"),
    ("x < 1", "x < 1"),
    ("x and y", "x and y"),
    ("x % 2", "%"),
    ("~x", "~"),
    ("True + x", "True"),
    ("1j", "1j"),
    ("sin", "sin"),  # a function is not a value
    ("pi(x)", "pi"),
    ("__builtins__", "__builtins__"),
    ("ｅｘｐ(x)", "'ｅ'"),  # Python would fold this to exp: refuse non-ASCII outright
    ("x +", "end of formula"),
    ("", ""),
    ("   ", ""),
]


@pytest.mark.parametrize(("text", "token"), MALICIOUS)
def test_rejects_malicious_or_malformed_formulas(text: str, token: str) -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula(text, key="source")
    assert caught.value.key == "source"
    assert caught.value.token == token
    assert str(caught.value).startswith("source: ")
    shown = token or "''"
    assert f"offending token: {shown}" in str(caught.value)


def test_message_names_key_token_and_column() -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula("1 + x.__class__", key="source")
    assert str(caught.value) == (
        "source: attribute access cannot be used in a formula "
        "(offending token: x.__class__, column 4)"
    )
    assert caught.value.column == 4


def test_rejects_oversized_and_deeply_nested_formulas() -> None:
    with pytest.raises(FormulaError, match="2000 characters") as caught:
        parse_formula("x+" * 999 + "xx", key="source")
    assert caught.value.token.startswith("x+x+")
    with pytest.raises(FormulaError, match="nested"):
        parse_formula("sin(" * 60 + "x" + ")" * 60, key="source")
    with pytest.raises(FormulaError, match="terms"):
        parse_formula("+".join(["x*y"] * 200), key="source")


@pytest.mark.parametrize(
    "value", [None, True, [1, 2], {"x": 1}, float("nan"), float("inf"), b"x", 1j]
)
def test_rejects_values_that_are_not_text_or_finite_numbers(value) -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula(value, key="noise")
    assert caught.value.key == "noise"


def test_allowed_variables_are_per_key() -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula("2 + x*t", key="diffusivity_truth", allowed=("x", "y"))
    assert (caught.value.key, caught.value.token) == ("diffusivity_truth", "t")
    assert "may only depend on x, y" in str(caught.value)
    assert parse_formula("2 + x*y", key="diffusivity_truth", allowed=("x", "y")).variables == {
        "x",
        "y",
    }


def test_power_towers_stay_cheap() -> None:
    started = time.perf_counter()
    formula = parse_formula("9**9**9**9**9", key="source")
    assert np.isinf(formula(x=np.zeros(3))).all()
    assert torch.isinf(formula(x=torch.zeros(3))).all()
    assert time.perf_counter() - started < 5.0  # a Python big int would never finish


def test_huge_literals_are_inf_not_errors() -> None:
    assert parse_formula("1" + "0" * 400, key="source")() == np.inf
    assert parse_formula("1e999 - x", key="source")(x=0.0) == np.inf
    with pytest.raises(FormulaError, match="finite"):
        parse_formula(10**400, key="source")


def test_numbers_from_yaml_become_text_and_broadcast() -> None:
    formula = parse_formula(2, key="boundary_diffusivity", allowed=("x", "y"))
    assert (formula.text, formula.variables) == ("2", frozenset())
    values = formula(x=np.zeros(5), y=np.zeros((3, 1)))
    assert values.shape == (3, 5) and (values == 2.0).all()
    tensor = formula(x=torch.zeros(4, dtype=torch.float32))
    assert tensor.shape == (4,) and tensor.dtype == torch.float32 and (tensor == 2).all()
    assert parse_formula(0.5, key="s").text == "0.5"
    assert parse_formula("pi", key="s")().shape == ()


def test_caret_is_power_with_power_precedence() -> None:
    x = np.linspace(-2, 2, 9)
    caret = parse_formula("2*x^2 + 1", key="s")
    assert np.allclose(caret(x=x), 2 * x**2 + 1)
    assert caret.canonical == parse_formula("2 * x**2+1", key="s").canonical
    assert parse_formula("2^3^2", key="s")() == 512.0  # right-associative, like **
    assert parse_formula("-x^2", key="s")(x=3.0) == -9.0


def test_min_max_and_abs_are_elementwise() -> None:
    x = np.array([-2.0, 0.5, 3.0])
    assert np.array_equal(parse_formula("min(x, 1)", key="s")(x=x), [-2.0, 0.5, 1.0])
    assert np.array_equal(parse_formula("max(abs(x), 1)", key="s")(x=x), [2.0, 1.0, 3.0])
    tensor = parse_formula("max(x, 0)", key="s")(x=torch.tensor(x))
    assert torch.equal(tensor, torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "text",
    [
        HEATINV_SOURCE,
        HEATINV_U,
        HEATINV_A,
        "sqrt(1 + x^2) * log(2 + y) - tanh(t) / (1 + e)",
        "atan(x) + sinh(y) * cosh(t) + tan(0.3*x)",
    ],
)
def test_numpy_and_torch_agree(text: str) -> None:
    formula = parse_formula(text, key="source")
    at = points()
    expected = formula(**at)
    assert isinstance(expected, np.ndarray) and expected.shape == (64,)
    as_tensors = formula(**{name: torch.from_numpy(value) for name, value in at.items()})
    assert as_tensors.dtype == torch.float64
    np.testing.assert_allclose(as_tensors.numpy(), expected, rtol=1e-12, atol=1e-12)
    single = formula(**{name: torch.from_numpy(value).float() for name, value in at.items()})
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mixed_floats_and_tensors_use_torch() -> None:
    value = parse_formula("x + t", key="s")(x=torch.ones(3), t=0.5)
    assert isinstance(value, torch.Tensor) and torch.equal(value, torch.full((3,), 1.5))


def test_missing_variable_is_a_clear_error() -> None:
    formula = parse_formula(HEATINV_U, key="temperature_truth")
    with pytest.raises(FormulaError, match="temperature_truth: the formula uses 't'"):
        formula(x=np.zeros(2), y=np.zeros(2))


def test_autograd_matches_analytic_derivatives() -> None:
    x = torch.linspace(-1, 1, 11, dtype=torch.float64, requires_grad=True)
    y = torch.full_like(x, 0.3, requires_grad=True)
    a = parse_formula("x^2 * sin(y) + exp(x)", key="diffusivity_truth")(x=x, y=y)
    a_x, a_y = torch.autograd.grad(a.sum(), [x, y])
    torch.testing.assert_close(a_x, 2 * x * torch.sin(y) + torch.exp(x))
    torch.testing.assert_close(a_y, x**2 * torch.cos(y))


def test_heatinv_source_is_the_pde_residual_of_its_truths() -> None:
    """f = u_t - div(a grad u) for PINNacle's u and a: the formula machinery can carry PDE
    residuals (first and second derivatives through parsed formulas) exactly."""
    u_of = parse_formula(HEATINV_U, key="temperature_truth")
    a_of = parse_formula(HEATINV_A, key="diffusivity_truth", allowed=("x", "y"))
    f_of = parse_formula(HEATINV_SOURCE, key="source")
    x, y, t = (torch.from_numpy(value).requires_grad_() for value in points(256).values())

    u = u_of(x=x, y=y, t=t)
    u_x, u_y, u_t = torch.autograd.grad(u.sum(), [x, y, t], create_graph=True)
    a = a_of(x=x, y=y)
    (flux_x,) = torch.autograd.grad((a * u_x).sum(), [x], create_graph=True)
    (flux_y,) = torch.autograd.grad((a * u_y).sum(), [y], create_graph=True)
    residual = u_t - (flux_x + flux_y)

    torch.testing.assert_close(residual, f_of(x=x, y=y, t=t), rtol=1e-10, atol=1e-10)


def test_formulas_pickle_and_compare_by_text() -> None:
    formula = parse_formula(HEATINV_A, key="diffusivity_truth", allowed=("x", "y"))
    copy = pickle.loads(pickle.dumps(formula))
    assert copy == formula and copy.key == "diffusivity_truth" and isinstance(copy, Formula)
    np.testing.assert_array_equal(copy(x=0.5, y=0.5), formula(x=0.5, y=0.5))
    error = pickle.loads(pickle.dumps(FormulaError("source", "z", "unknown name 'z'", 0)))
    assert (error.key, error.token, str(error)) == (
        "source",
        "z",
        "source: unknown name 'z' (offending token: z, column 0)",
    )
