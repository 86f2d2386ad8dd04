"""Code versions from source: an asset's ``code_version`` is a hash of the code that computes it,
so the Dagster UI says "code version changed" after an edit that can change its result, and
nothing after one that cannot.

The code of an asset is its function's source, the sources of the functions, classes and values
of its own module that it uses, and every module of the package it reaches: the ones it imports
(at the top of its module or inside the function) or whose objects it uses, and, transitively,
every module of the package those import. Sources are read from the files, never imported, so
computing versions imports no heavy library. This over-approximates (a module imported for one
helper counts whole), which is the safe side: a version may change without the result changing,
never the reverse. Third-party packages are left to the lock file (constraints.txt), which the
MLflow runs record.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from pathlib import Path
from types import CodeType

import dagster as dg

from heat_platform.parsing import parse

DIGITS = 12  # of the sha256; enough to tell versions apart in the UI


def code_version(fn: Callable, package: str = "heat_platform") -> str:
    """The hash of everything of ``package`` that ``fn`` runs (see the module's docstring)."""
    digest = hashlib.sha256()
    for name, source in sorted(_sources(fn, package).items()):
        digest.update(f"{name}\0{source}\0".encode())
    return digest.hexdigest()[:DIGITS]


def modules_of(fn: Callable, package: str = "heat_platform") -> list[str]:
    """The package's modules whose whole source :func:`code_version` hashes for ``fn``."""
    return sorted(name for name in _sources(fn, package) if ":" not in name)


def with_code_versions(assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Each asset with the code version of the function that computes it."""
    return [asset.map_asset_specs(lambda spec, fn=asset.op.compute_fn.decorated_fn:
                                  spec.replace_attributes(code_version=code_version(fn)))
            if asset.is_executable else asset for asset in assets]


def _sources(fn: Callable, package: str) -> dict[str, str]:
    """Source text by ``module:name`` for ``fn`` and what it uses of its own module, and by
    module name for every other module of the package it reaches."""
    sources: dict[str, str] = {}
    modules: set[str] = set()
    _function(fn, package, sources, modules)
    root = _package_root(package)
    pending = sorted(modules)
    while pending:
        name = pending.pop()
        path = _module_path(root, package, name)
        if path is None or name in sources:
            continue
        sources[name] = _read(path)
        pending += [m for m in _module_imports(path, path.stat().st_mtime_ns, name, package)
                    if m not in sources]
    return sources


def _function(fn: Callable, package: str, sources: dict[str, str], modules: set[str]) -> None:
    """Record ``fn``'s source, and recursively what it uses of its own module (functions,
    classes, the statements that assign its values); collect the package's modules it reaches
    (imported inside it, or at the top of its module for the names it uses)."""
    module = inspect.getmodule(fn)
    key = f"{module.__name__}:{fn.__qualname__}"
    if key in sources:
        return
    source = textwrap.dedent(inspect.getsource(fn))
    sources[key] = source
    root = _package_root(package)
    modules.update(_imports(source, module.__name__, package, root))
    path = Path(inspect.getsourcefile(module))
    imported, assigned = _top_level(path, path.stat().st_mtime_ns, module.__name__, package)
    names = set(_names(fn.__code__)) | {
        n.id for n in ast.walk(parse(source)) if isinstance(n, ast.Name)}
    for name in sorted(names):
        value = fn.__globals__.get(name)
        if name in imported:
            modules.add(imported[name])
        elif name in assigned:
            sources[f"{module.__name__}:{name}"] = assigned[name]
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            _function(value, package, sources, modules)
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            sources[f"{module.__name__}:{name}"] = inspect.getsource(value)


@lru_cache(maxsize=256)
def _top_level(path: Path, mtime_ns: int, module: str, package: str
               ) -> tuple[dict[str, str], dict[str, str]]:
    """The names a module's top level imports from the package (name -> module) and the source
    of the statement that assigns each of its other top-level names."""
    text = _read(path)
    root = _package_root(package)
    imported: dict[str, str] = {}
    assigned: dict[str, str] = {}
    for node in parse(text).body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _module_path(root, package, alias.name) is not None:
                    imported[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found = full if _module_path(root, package, full) else node.module
                if _module_path(root, package, found) is not None:
                    imported[alias.asname or alias.name] = found
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        assigned[name.id] = assigned.get(name.id, "") + ast.get_source_segment(
                            text, node)
    return imported, assigned


def _names(code: CodeType) -> Iterable[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _names(const)


@cache
def _package_root(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent


def _module_path(root: Path, package: str, name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != package:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _read(path: Path) -> str:
    return _read_cached(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=512)
def _read_cached(path: Path, mtime_ns: int) -> str:
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=512)
def _module_imports(path: Path, mtime_ns: int, module: str, package: str) -> tuple[str, ...]:
    return tuple(_imports(_read(path), module, package, _package_root(package)))


def _imports(source: str, module: str, package: str, root: Path) -> list[str]:
    """The package's modules ``source`` (of ``module``) imports, anywhere in it; ``from a
    import b`` counts ``a.b`` when b is a module."""
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, *([base] if base else [])])
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names
                      if _module_path(root, package, f"{base}.{alias.name}") is not None]
    return [name for name in found if name == package or name.startswith(f"{package}.")]
