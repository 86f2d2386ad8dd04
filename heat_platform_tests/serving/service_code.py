"""The BentoML service's own modules (bentos/heat_service/*.py), imported in the test process by
the names they have inside the bento (``limits``, ``errors``, ...), so they import each other as
they do there. Those that need the served models (service.py) are tested over HTTP instead."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

SERVICE = Path(__file__).resolve().parents[2] / "bentos" / "heat_service"


def service_module(name: str) -> ModuleType:
    if str(SERVICE) not in sys.path:
        sys.path.append(str(SERVICE))
    return importlib.import_module(name)
