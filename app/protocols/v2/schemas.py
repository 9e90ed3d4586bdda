"""Request and response models of the Open Inference Protocol v2 routes (KServe V2,
Triton's HTTP/REST API), as this service speaks it (app/protocols/v2/routes.py).

Strict like the rest of the API: unknown fields are rejected, and every number has
both bounds. Request parameters are typed: the sampling ones apply to the generator,
``binary_data_output``, ``priority`` and ``timeout`` (which Triton's clients may send)
are accepted and, apart from the first, ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.protocols.native.limits import MAX_NEW_CHARS_CAP, SEED_MAX, TOP_K_CAP

_STRICT = ConfigDict(extra="forbid", strict=True)
MAX_DIM = 2**31 - 1
Dim = Annotated[int, Field(ge=0, le=MAX_DIM)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class TensorParameters(BaseModel):
    model_config = _STRICT
    binary_data_size: int | None = Field(
        None, ge=0, le=MAX_DIM, description="binary tensor data extension: the tensor's bytes "
        "follow the JSON header (Inference-Header-Content-Length) instead of `data`")


class InputTensor(BaseModel):
    model_config = _STRICT
    name: Name
    shape: Annotated[list[Dim], Field(min_length=1, max_length=4)]
    datatype: str = Field(..., max_length=16, description="BYTES for every input here")
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(None, description="row-major elements (may be nested); "
                                   "BYTES elements are strings")


class OutputParameters(BaseModel):
    model_config = _STRICT
    binary_data: bool | None = Field(None, description="return this output as binary data")


class RequestedOutput(BaseModel):
    model_config = _STRICT
    name: Name
    parameters: OutputParameters | None = None


class InferParameters(BaseModel):
    model_config = _STRICT
    binary_data_output: bool | None = Field(None, description="every output as binary data")
    priority: int | None = Field(None, ge=0, le=2**63 - 1, description="accepted, ignored")
    timeout: int | None = Field(None, ge=0, le=2**63 - 1, description="accepted, ignored")
    max_new_chars: int | None = Field(None, ge=1, le=MAX_NEW_CHARS_CAP,
                                      description="chargen: characters to generate at most "
                                      "(default 200, at most SEQSERVE_MAX_NEW_CHARS)")
    temperature: float | None = Field(None, ge=0.0, le=10.0, description="chargen: 0 = greedy")
    top_k: int | None = Field(None, ge=1, le=TOP_K_CAP, description="chargen")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="chargen")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="chargen: drawn below 2^53 if absent")


GENERATION_PARAMETERS = ("max_new_chars", "temperature", "top_k", "top_p", "seed")


class InferRequest(BaseModel):
    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                     "data": ["A moving film.", "Dull and far too long."]}]},
        {"parameters": {"max_new_chars": 80, "temperature": 0.7, "seed": 1},
         "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES",
                     "data": ["the free spirit "]}]}]})
    id: str | None = Field(None, max_length=256, description="echoed in the answer")
    parameters: InferParameters | None = None
    inputs: Annotated[list[InputTensor], Field(min_length=1, max_length=8)]
    outputs: Annotated[list[RequestedOutput], Field(max_length=8)] | None = Field(
        None, description="outputs to return (default: all)")


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES", "FP32"]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="chargen: seed, finish_reason, generated_chars")
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(..., description="-1: any size")


class ParameterMetadata(BaseModel):
    """Extension: the request parameters a model reads, with their bounds."""

    name: str
    datatype: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: list[ParameterMetadata] = Field(default_factory=list)
    task: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ReadyResponse(BaseModel):
    ready: bool
    name: str | None = None
    reason: str | None = None


class LiveResponse(BaseModel):
    live: bool


class RepositoryIndexRequest(BaseModel):
    """The optional body of POST /v2/repository/index (Triton's model repository
    extension): ``ready`` true lists only the models ready to serve."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ready: bool | None = Field(None, description="true: only the models that are ready")


class RepositoryIndexEntry(BaseModel):
    """One model of the repository index, in Triton's shape."""

    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"] = Field(
        ..., description="READY when loaded and warmed up (and the server ready)")
    reason: str = Field("", description="why it is not ready, if it is not")


class V2Error(BaseModel):
    error: str
