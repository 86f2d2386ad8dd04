"""Code versions come from the source that computes each asset: an edit of the asset's function
or of a library module it reaches shows in the Dagster UI as "code version changed"; an edit
elsewhere does not. Every asset also has a description, owners and kinds for the UI."""

from __future__ import annotations

import importlib
import os
import re
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from heat_platform.assets.code_versions import code_version, modules_of
from heat_platform.definitions import defs


def test_every_asset_has_its_code_version_a_description_owners_and_kinds() -> None:
    versions = {}
    for asset in defs.assets:
        fn = asset.op.compute_fn.decorated_fn
        for spec in asset.specs:
            name = spec.key.to_user_string()
            assert spec.code_version == code_version(fn), name
            assert re.fullmatch(r"[0-9a-f]{12}", spec.code_version), name
            assert spec.description and spec.owners and spec.kinds, name
            versions[name] = spec.code_version
    # one function, one version (validation's two outputs); different functions differ
    assert versions["validated_measurements"] == versions["quarantined_measurements"]
    distinct = {v for k, v in versions.items() if k != "quarantined_measurements"}
    assert len(distinct) == len(versions) - 1
    gate_modules = modules_of(defs.resolve_assets_def("gate_report").op.compute_fn.decorated_fn)
    assert {"heat_platform.models.gate", "heat_platform.models.scoring"} <= set(gate_modules)


@pytest.fixture
def package(tmp_path: Path, monkeypatch):
    """A package ``lab``: ``stage`` (an asset function) calls ``physics`` lazily and uses a
    helper of its own module; ``unrelated`` is imported by nothing."""
    root = tmp_path / "lab"
    root.mkdir()
    files = {
        "__init__.py": "",
        "physics.py": "def solve(x):\n    return 2 * x\n",
        "unrelated.py": "def other():\n    return 1\n",
        "stage.py": textwrap.dedent("""\
            SCALE = 3

            def _helper(x):
                return x * SCALE

            def result():
                from lab.physics import solve
                return _helper(solve(1))
            """),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "lab" or m.startswith("lab.")]:
        del sys.modules[name]


def edit(path: Path, old: str, new: str) -> None:
    stat = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # past .pyc (seconds)


def test_an_edit_of_the_code_an_asset_runs_changes_its_version_and_dagster_sees_it(
        package: Path, dagster_instance) -> None:
    stage = importlib.import_module("lab.stage")
    first = code_version(stage.result, package="lab")
    assert modules_of(stage.result, package="lab") == ["lab.physics"]

    edit(package / "unrelated.py", "return 1", "return 2")
    assert code_version(stage.result, package="lab") == first

    edit(package / "physics.py", "2 * x", "3 * x")
    second = code_version(stage.result, package="lab")
    assert second != first

    edit(package / "stage.py", "SCALE = 3", "SCALE = 4")  # a value the asset uses
    stage = importlib.reload(stage)
    third = code_version(stage.result, package="lab")
    assert third not in (first, second)

    # what the UI shows: materialised at one version, the definitions now carry the next
    def asset_at(version: str) -> dg.AssetsDefinition:
        @dg.asset(name="result", code_version=version)
        def result() -> int:
            return 1
        return result

    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.definitions.data_version import (
        CachingStaleStatusResolver,
        StaleCauseCategory,
        StaleStatus,
    )
    from dagster._core.loader import LoadingContextForTest

    dg.materialize([asset_at(second)], instance=dagster_instance)
    key = dg.AssetKey("result")
    for version, stale in ((second, False), (third, True)):
        resolver = CachingStaleStatusResolver(  # what the UI's "code version changed" reads
            dagster_instance, AssetGraph.from_assets([asset_at(version)]),
            LoadingContextForTest(dagster_instance))
        assert (resolver.get_status(key) == StaleStatus.STALE) is stale
        causes = resolver.get_stale_causes(key)
        assert [c.category for c in causes] == ([StaleCauseCategory.CODE] if stale else [])
