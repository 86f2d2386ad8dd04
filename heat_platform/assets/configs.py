"""Dagster run configs derived from the libraries' own config classes, never copied by hand.

The libraries describe their settings once (pydantic dataclasses whose field docstrings are
their descriptions: ``PINNConfig``, the gate's ``Thresholds``, ``DriftThresholds``); the
launchpad's configs here are built from them field by field, so a new field or a changed
default or description shows in the Dagster UI without touching this package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import dagster as dg
import pydantic
from pydantic import Field


def derived_config(name: str, source: type, *, doc: str, base: type[dg.Config] = dg.Config,
                   exclude: Iterable[str] = (), defaults: dict[str, Any] | None = None,
                   overrides_only: bool = False, **extra: Any) -> type[dg.Config]:
    """A ``dg.Config`` class with a field for each field of ``source`` (a pydantic dataclass),
    same type, default and description. ``overrides_only``: every field defaults to None,
    meaning "as the source says" (for configs that pick a preset and override parts of it).
    ``defaults`` replaces source defaults; ``extra`` adds fields (``(type, Field(...))``)."""
    fields: dict[str, Any] = {}
    for field_name, info in source.__pydantic_fields__.items():
        if field_name in exclude:
            continue
        if overrides_only:
            fields[field_name] = (info.annotation | None,
                                  Field(default=None, description=info.description))
        else:
            default = (defaults or {}).get(field_name, info.default)
            fields[field_name] = (info.annotation, Field(default=default,
                                                         description=info.description))
    return pydantic.create_model(name, __base__=base, __doc__=doc, __module__=base.__module__,
                                 **fields, **extra)


def library_values(config: dg.Config, source: type) -> dict[str, Any]:
    """The fields of ``config`` that ``source`` (a dataclass) has, by name."""
    names = {field.name for field in dataclasses.fields(source)}
    return {name: value for name, value in config.model_dump().items() if name in names}
