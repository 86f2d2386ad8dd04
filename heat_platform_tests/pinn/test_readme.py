"""The PINN on one page (heat_platform/pinn/README.md) runs as written and finds a."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "heat_platform" / "pinn" / "README.md"


@pytest.mark.slow
def test_the_one_page_example_runs_and_finds_the_diffusivity(tmp_path):
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    (tmp_path / "page.py").write_text(code)
    result = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    low, high = map(float, re.search(r"a in \[([\d.]+), ([\d.]+)\]", result.stdout).groups())
    assert 1.4 < low <= high < 1.6  # the truth is 1.5
    assert (tmp_path / "model.pt").is_file()
