"""The package's layers are enforced (import-linter contracts in pyproject.toml), not hoped for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", "pyproject.toml"],
                          cwd=project, env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "forbidden"), [
    ("heat_platform/heat/solver.py", "from heat_platform.models import gate  # noqa"),
    ("heat_platform/pinn/losses.py", "import heat_platform.data.catalog  # noqa"),
    ("heat_platform/models/scoring.py", "import dagster  # noqa"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, forbidden):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "heat_platform", project / "heat_platform",
                    ignore=shutil.ignore_patterns("__pycache__", "*.dat"))
    shutil.copyfile(ROOT / "pyproject.toml", project / "pyproject.toml")
    target = project / module
    target.write_text(target.read_text() + f"\n{forbidden}\n")
    result = lint_imports(project)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout, result.stdout + result.stderr
