"""Request, response and error bodies of the heat service, with the input limits they enforce.

Validation is declarative (pydantic): non-numbers, NaN/inf, wrong shapes, empty batches,
batches over the limit and unknown query parameters are answered with a 4xx naming the
offending field, before any model runs. Every error answer has the shape of :class:`Error`.
"""

from __future__ import annotations

from typing import Annotated

from heat_settings import ServingSettings
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

MAX_POINTS = ServingSettings.load().max_points

# A coordinate in a JSON body: a finite JSON number, nothing coerced into one (no true/false,
# no numeric strings). Query strings are text: there, FiniteFloat parses the text.
Coordinate = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Point3 = tuple[Coordinate, Coordinate, Coordinate]
Point2 = tuple[Coordinate, Coordinate]
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


# A value the model gives at a point; null where it has no finite value (possible only far
# outside the training domain, where a point's in_domain is false).
Value = Annotated[float | None, Field(description="null where the model has no finite value "
                                                  "(only far outside the training domain)")]


class TemperatureAtPoint(Lineage):
    u: Value
    in_domain: bool


class Temperatures(Lineage):
    u: list[Value]
    in_domain: list[bool]


class Diffusivities(Lineage):
    a: list[Value]
    in_domain: list[bool]


class ErrorDetail(BaseModel):
    """One validation problem: where (``loc``), what (``msg``), its kind (``type``)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class Error(BaseModel):
    """Every error answer, of the service and of the proxy of `heat-platform serve`."""

    error: str = Field(description="what went wrong")
    detail: str | list[ErrorDetail] | None = Field(
        default=None, description="more about it: a hint, or the validation problems")


class ExperimentQuery(BaseModel):
    """A query string that may name the experiment (POST /predict-binary); nothing else."""

    model_config = ConfigDict(extra="forbid")

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
    predictions: list[Value]
    in_domain: list[bool]
    model_name: str
    model_version: str
    model_kind: str
    data_version: str
