"""``ast.parse`` that a garbage collection cannot break.

CPython 3.11 keeps the depth counter of its AST construction in interpreter-wide state and
checks, when a parse ends, that the counter is back where that parse started. A collection that
runs inside a parse (any allocation can start one) may run a finalizer that parses too: a
finalizer that logs a traceback does, since 3.11 formats tracebacks by parsing their source
lines. The inner parse leaves the counter at its own, deeper start, and the outer one fails with
``SystemError: AST constructor recursion depth mismatch``. ``make test`` saw exactly this: a
SQLAlchemy connection collected during the code-version hashing logged "Exception during reset"
and the Dagster definitions failed to build.

Parsing with the collector paused closes the window: without a collection no Python code runs
inside the parse (tokenizer, parser and AST construction are C), so no other parse can interleave
with it, in this thread or another. Collection resumes after it; nothing is lost.

A foundation module (it imports nothing of the platform), so every layer may use it.
"""

from __future__ import annotations

import ast
import gc


def parse(source: str, mode: str = "exec") -> ast.AST:
    """``ast.parse(source, mode=mode)`` with the cyclic garbage collector paused."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, mode=mode)
    finally:
        if was_enabled:
            gc.enable()
