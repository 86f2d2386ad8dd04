"""Safe formulas from ``problem.yaml`` that evaluate on numpy arrays and on torch tensors.

Formulas come from users' files, so they are untrusted: the text is never given to ``eval``,
``exec`` or ``compile``. It is parsed with ``ast.parse(..., mode="eval")``, checked against a
strict whitelist and turned into a tree of small Python closures.

What a formula may contain
--------------------------
* the variables ``x``, ``y``, ``t`` (each key allows a subset: a diffusivity only ``x, y``)
  and the constants ``pi`` and ``e``;
* numbers, which all become floats (so ``9**9**9**9`` is ``inf``, never a huge integer);
* unary ``+ -``, binary ``+ - * /`` and powers ``**``; ``^`` is accepted as a power too, with
  the precedence of ``**`` (``2*x^2 + 1`` is ``2*x**2 + 1``, not Python's xor);
* calls to the functions in :data:`FUNCTIONS` (``min``/``max`` take two arguments and act
  elementwise).

Anything else (attributes, indexing, strings, lambdas, comparisons, keyword arguments, unknown
names...) raises :class:`FormulaError`, which names the problem.yaml key and the offending token.
Evaluation is on numpy (float64) unless an argument is a torch tensor; then it stays in torch,
keeping dtype and device and the autograd graph, because PINN residuals differentiate ``f`` and ``a``.
"""

from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from heat_platform.parsing import parse

if TYPE_CHECKING:
    import torch

VARIABLES = ("x", "y", "t")
CONSTANTS = {"pi": math.pi, "e": math.e}
# name -> (number of arguments, numpy function, name of the torch function). torch is imported
# only when a tensor is evaluated, so numpy-only users (validation, the solver) never pay for it.
FUNCTIONS: dict[str, tuple[int, Callable, str]] = {
    "sin": (1, np.sin, "sin"),
    "cos": (1, np.cos, "cos"),
    "tan": (1, np.tan, "tan"),
    "exp": (1, np.exp, "exp"),
    "log": (1, np.log, "log"),
    "sqrt": (1, np.sqrt, "sqrt"),
    "tanh": (1, np.tanh, "tanh"),
    "sinh": (1, np.sinh, "sinh"),
    "cosh": (1, np.cosh, "cosh"),
    "atan": (1, np.arctan, "atan"),
    "abs": (1, np.abs, "abs"),
    "min": (2, np.minimum, "minimum"),
    "max": (2, np.maximum, "maximum"),
}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.Pow: operator.pow}  # fmt: skip
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}

MAX_LENGTH = 1000
MAX_NODES = 400
MAX_DEPTH = 50

# How rejected constructs are named in messages; anything unlisted uses its AST class name.
_CONSTRUCTS = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda",
    ast.IfExp: "conditional expressions", ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators", ast.NamedExpr: "assignment (:=)", ast.JoinedStr: "f-strings",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
}  # fmt: skip
# Keywords make better tokens than the whole expression for these.
_KEYWORD_TOKENS = {ast.Lambda: "lambda", ast.NamedExpr: ":="}
_OPERATOR_TOKENS = {
    ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "xor", ast.Invert: "~", ast.Not: "not",
}  # fmt: skip


class FormulaError(ValueError):
    """A formula was rejected; ``key`` is the problem.yaml key, ``token`` what offended."""

    def __init__(self, key: str, token: str, reason: str, column: int | None = None):
        where = "" if column is None else f", column {column}"
        shown = token or "''"
        super().__init__(f"{key}: {reason} (offending token: {shown}{where})")
        self.key, self.token, self.reason, self.column = key, token, reason, column

    def __reduce__(self):  # exceptions cross process boundaries (Dagster, multiprocessing)
        return type(self), (self.key, self.token, self.reason, self.column)


# A compiled node: takes the evaluation environment, returns an array, tensor or scalar.
Node = Callable[["_Env"], Any]
Value = "np.ndarray | torch.Tensor | float"


@dataclass(frozen=True)
class Formula:
    """A parsed, whitelisted formula; call it with keyword arrays ``x``, ``y``, ``t``."""

    text: str
    variables: frozenset[str]
    key: str = field(default="formula", compare=False)
    canonical: str = field(default="", compare=False)  # whitespace-free form for hashing
    _evaluate: Node | None = field(default=None, repr=False, compare=False)

    def __call__(
        self, x: Value | None = None, y: Value | None = None, t: Value | None = None
    ) -> np.ndarray | torch.Tensor:
        """Numpy float64 in, numpy out; any torch tensor in, torch out (its dtype and device).
        The result has the broadcast shape of all the arguments given, even for constants."""
        given = {name: value for name, value in (("x", x), ("y", y), ("t", t)) if value is not None}
        if missing := sorted(self.variables - given.keys()):
            raise FormulaError(
                self.key, missing[0], f"the formula uses {missing[0]!r} but no value was given"
            )
        if any(_is_tensor(value) for value in given.values()):
            return _evaluate_torch(self._evaluate, given)
        return _evaluate_numpy(self._evaluate, given)

    def __reduce__(self):  # closures do not pickle: ship the text and parse again
        return _unpickle, (self.text, self.key, tuple(sorted(self.variables)))


def _unpickle(text: str, key: str, variables: tuple[str, ...]) -> Formula:
    return parse_formula(text, key=key, allowed=variables)


class _Env:
    """Variable values and backend for one evaluation."""

    def __init__(
        self,
        values: dict[str, Any],
        functions: dict[str, Callable],
        constant: Callable[[float], Any],
    ):
        self.values, self.functions, self.constant = values, functions, constant


def _evaluate_numpy(evaluate: Node, given: dict[str, Any]) -> np.ndarray:
    values = {name: np.asarray(value, dtype=np.float64) for name, value in given.items()}
    shape = np.broadcast_shapes(*(value.shape for value in values.values()))
    env = _Env(values, {name: f[1] for name, f in FUNCTIONS.items()}, np.float64)
    with np.errstate(all="ignore"):  # overflow and log(0) give inf/nan, as documented
        result = np.asarray(evaluate(env))
    return result if result.shape == shape else np.broadcast_to(result, shape).copy()


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # not imported yet: nothing can be a tensor
    return torch is not None and isinstance(value, torch.Tensor)


def _evaluate_torch(evaluate: Node, given: dict[str, Any]) -> torch.Tensor:
    import torch

    reference = next(value for value in given.values() if isinstance(value, torch.Tensor))
    dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
    values = {}
    for name, value in given.items():
        if isinstance(value, torch.Tensor):
            values[name] = value if value.is_floating_point() else value.to(dtype)
        else:
            values[name] = torch.as_tensor(value, dtype=dtype, device=reference.device)
    shape = torch.broadcast_shapes(*(value.shape for value in values.values()))

    def constant(value: float) -> torch.Tensor:
        # Tensors, not Python floats: float ** float can raise OverflowError and torch.sin
        # refuses floats; 0-d tensors also take part in type promotion as scalars.
        return torch.tensor(value, dtype=dtype, device=reference.device)

    result = evaluate(_Env(values, {name: getattr(torch, f[2]) for name, f in FUNCTIONS.items()}, constant))
    return result if result.shape == shape else result.expand(shape).contiguous()


def parse_formula(
    value: str | int | float, *, key: str, allowed: tuple[str, ...] = VARIABLES
) -> Formula:
    """Parse and check ``value`` (text, or a number given in yaml) for the problem.yaml ``key``."""
    if unknown := set(allowed) - set(VARIABLES):
        raise ValueError(f"allowed variables must come from {VARIABLES}, got {sorted(unknown)}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FormulaError(key, type(value).__name__, "a formula must be a string or a number")
    if not isinstance(value, str):
        if not math.isfinite(_to_float(value)):
            raise FormulaError(key, type(value).__name__, "a number in a formula must be finite")
        value = str(value)
    text = value
    tree, source_to_text = _parse(text, key)
    compiler = _Compiler(text, source_to_text, key, allowed)
    compiler.check_names(tree)
    evaluate = compiler.compile(tree.body)
    # After the '^' rewrite, so "x^2" and "x ** 2" hash alike.
    canonical = ast.unparse(tree).replace(" ", "")
    return Formula(text, frozenset(compiler.used), key, canonical, evaluate)


def _parse(text: str, key: str) -> tuple[ast.Expression, list[int]]:
    """Parse ``text`` on one line with '^' as '**'; also return source index -> text index."""
    if not text.strip():
        raise FormulaError(key, "", "the formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaError(
            key,
            _abbreviate(text),
            f"the formula has {len(text)} characters, more than {MAX_LENGTH}",
        )
    for column, char in enumerate(text):
        # ASCII only: AST columns are then character columns, and no Unicode look-alikes
        # (Python folds 'ｅｖａｌ' into 'eval') reach the parser.
        if not (char.isascii() and (char.isprintable() or char in "\t\r\n")):
            raise FormulaError(key, repr(char), "only printable ASCII is allowed", column)
    source, source_to_text = [], []
    for column, char in enumerate(text):
        if not source and char.isspace():
            continue  # leading blanks would be an IndentationError
        replacement = "**" if char == "^" else " " if char in "\t\r\n" else char
        source.append(replacement)
        source_to_text.extend([column] * len(replacement))
    source_to_text.append(len(text))
    try:
        tree = parse("".join(source), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        offset = getattr(error, "offset", None)
        column = source_to_text[min(offset - 1, len(source_to_text) - 1)] if offset else None
        token = text[column] if column is not None and column < len(text) else "end of formula"
        detail = getattr(error, "msg", str(error))
        reason = "invalid syntax" + ("" if detail == "invalid syntax" else f": {detail}")
        raise FormulaError(key, token, reason, column) from None
    expressions = [node for node in ast.walk(tree) if isinstance(node, ast.expr)]
    if len(expressions) > MAX_NODES:
        raise FormulaError(
            key,
            _abbreviate(text),
            f"the formula has {len(expressions)} terms, more than {MAX_NODES}",
        )
    stack, depth = [(tree.body, 1)], 0
    while stack:  # iterative: a recursive walk could itself overflow on hostile input
        node, level = stack.pop()
        depth = max(depth, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    if depth > MAX_DEPTH:
        raise FormulaError(
            key, _abbreviate(text), f"the formula is nested {depth} deep, more than {MAX_DEPTH}"
        )
    return tree, source_to_text


def _to_float(number: int | float) -> float:
    try:
        return float(number)
    except OverflowError:  # an integer of hundreds of digits
        return math.inf


def _abbreviate(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Compiler:
    """Checks an AST against the whitelist and turns it into closures over an ``_Env``."""

    def __init__(self, text: str, source_to_text: list[int], key: str, allowed: tuple[str, ...]):
        self.text, self.source_to_text, self.key, self.allowed = text, source_to_text, key, allowed
        self.used: set[str] = set()

    def reject(self, node: ast.AST, reason: str, token: str | None = None) -> FormulaError:
        column = self.source_to_text[node.col_offset] if hasattr(node, "col_offset") else None
        if token is None and column is not None:
            end = self.source_to_text[node.end_col_offset]
            token = _abbreviate(self.text[column:end].strip())
        return FormulaError(self.key, token or type(node).__name__, reason, column)

    def check_names(self, tree: ast.Expression) -> None:
        """Unknown names first, wherever they are: for ``__import__('os').system('ls')`` the
        useful answer is ``__import__``, not the attribute access around it."""
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        names = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        ]
        for node in sorted(names, key=lambda node: node.col_offset):
            name = node.id
            if id(node) in called:
                if name not in FUNCTIONS:
                    raise self.reject(
                        node,
                        f"{name!r} is not an allowed function (allowed: {', '.join(FUNCTIONS)})",
                        name,
                    )
            elif name in VARIABLES and name not in self.allowed:
                raise self.reject(
                    node,
                    f"{name!r} is not allowed here: {self.key} may only "
                    f"depend on {', '.join(self.allowed) or 'constants'}",
                    name,
                )
            elif name not in VARIABLES and name not in CONSTANTS:
                raise self.reject(
                    node,
                    f"unknown name {name!r} (a formula may use "
                    f"{', '.join((*self.allowed, *CONSTANTS))})",
                    name,
                )

    def compile(self, node: ast.expr) -> Node:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.reject(node, f"{type(node.value).__name__} literals are not allowed")
            number = _to_float(node.value)  # never a big int: 9**9**9**9 must stay cheap
            return lambda env: env.constant(number)
        if isinstance(node, ast.Name):  # already checked by check_names
            name = node.id
            if name in CONSTANTS:
                number = CONSTANTS[name]
                return lambda env: env.constant(number)
            self.used.add(name)
            return lambda env: env.values[name]
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            unary, operand = UNARY[type(node.op)], self.compile(node.operand)
            return lambda env: unary(operand(env))
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            binary, left, right = (
                BINARY[type(node.op)],
                self.compile(node.left),
                self.compile(node.right),
            )
            return lambda env: binary(left(env), right(env))
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            symbol = _OPERATOR_TOKENS.get(type(node.op), type(node.op).__name__)
            raise self.reject(node, f"the operator {symbol!r} is not allowed", symbol)
        if isinstance(node, ast.Call):
            return self.compile_call(node)
        kind = _CONSTRUCTS.get(type(node), type(node).__name__)
        raise self.reject(
            node, f"{kind} cannot be used in a formula", _KEYWORD_TOKENS.get(type(node))
        )

    def compile_call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.reject(
                node.func, "only the listed functions can be called, and only by name"
            )
        name = node.func.id  # a whitelisted function, by check_names
        if node.keywords:
            raise self.reject(node.keywords[0], f"{name} takes no keyword arguments")
        if starred := [arg for arg in node.args if isinstance(arg, ast.Starred)]:
            raise self.reject(starred[0], "starred arguments are not allowed")
        arity = FUNCTIONS[name][0]
        if len(node.args) != arity:
            raise self.reject(
                node,
                f"{name} takes {arity} argument{'s' * (arity > 1)}, got {len(node.args)}",
                name,
            )
        arguments = [self.compile(arg) for arg in node.args]
        return lambda env: env.functions[name](*(argument(env) for argument in arguments))
