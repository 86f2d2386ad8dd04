"""Request and response bodies of the heat service, with the input limits they enforce.

Validation is declarative (pydantic): non-numbers, NaN/inf, wrong shapes, empty batches and
batches over the limit are answered with a 4xx naming the offending field, before any model runs.
"""

from __future__ import annotations

from typing import Annotated

from heat_settings import ServingSettings
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

MAX_POINTS = ServingSettings.load().max_points

Point3 = tuple[FiniteFloat, FiniteFloat, FiniteFloat]
Point2 = tuple[FiniteFloat, FiniteFloat]
Points3 = Annotated[list[Point3], Field(min_length=1, max_length=MAX_POINTS,
                                        description="[[x, y, t], ...]")]
Points2 = Annotated[list[Point2], Field(min_length=1, max_length=MAX_POINTS,
                                        description="[[x, y], ...]")]
ExperimentName = Annotated[str | None, Field(
    default=None, max_length=64, description="experiment to ask; the default one when omitted")]


class Lineage(BaseModel):
    """Which model answered: enough to find its MLflow run, data and Dagster run."""

    experiment: str
    model_name: str
    model_version: str
    model_kind: str = Field(description="pinn (a physics-informed network) or classical (the "
                            "adjoint inversion's fields, interpolated)")
    data_version: str
    mlflow_run_id: str
    dagster_run_id: str
    request_id: str
    timestamp: str


class TemperatureAtPoint(Lineage):
    u: float
    in_domain: bool


class Temperatures(Lineage):
    u: list[float]
    in_domain: list[bool]


class Diffusivities(Lineage):
    a: list[float]
    in_domain: list[bool]


class ExperimentQuery(BaseModel):
    """A query string that may name the experiment (POST /predict-binary)."""

    model_config = ConfigDict(extra="ignore")

    experiment: ExperimentName


class TemperatureQuery(ExperimentQuery):
    """GET /predict-temperature's query string: one point."""

    x: FiniteFloat
    y: FiniteFloat
    t: FiniteFloat


class KServeRequest(BaseModel):
    """KServe v1 inference protocol: ``{"instances": [[x, y, t], ...]}``."""

    instances: Points3


class KServeResponse(BaseModel):
    predictions: list[float]
    in_domain: list[bool]
    model_name: str
    model_version: str
    model_kind: str
    data_version: str
