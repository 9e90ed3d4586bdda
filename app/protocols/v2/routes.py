"""The Open Inference Protocol v2 (KServe V2, Triton's HTTP/REST API), so that
tritonclient, KServe and other V2 clients work unchanged.

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     liveness, readiness (as /healthz, /readyz)
    GET  /v2/models/{name}[/versions/{v}]      model metadata: tensors and parameters
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    POST /v2/repository/index                  the loaded models and their states (Triton's
                                               model repository extension, index call only)

Tensors: ``sentiment`` takes ``text`` (BYTES [N]) and returns ``probabilities``
(FP32 [N, 2]: negative, positive) and ``label`` (BYTES [N]); a classifier of other
labels (any number, its manifest's ``labels``) returns [N, labels] in that order and
names them in the answer's ``parameters.labels``; ``chargen`` takes
``prompt`` (BYTES [1]) with the request parameters max_new_chars, temperature, top_k,
top_p and seed, and returns ``text`` (BYTES [1]), with the seed, finish reason and
generated characters in the answer's parameters.

Inference goes through the same code as the REST routes: ``classify`` (the batching
loop) of app/protocols/native/classify.py and the generation helpers of app/protocols/native/generate.py,
after the same checks of app/protocols/native/limits.py; so limits, queueing, timeouts and status
codes are the same. Errors are in the protocol's ``{"error": "<message>"}`` shape
(app/protocols/v2/errors.py). Triton's binary tensor data extension is spoken both ways
(tritonclient uses it by default): input tensors whose bytes follow the JSON header,
and outputs returned as binary when asked for.

Metadata and health are open like the other operations routes; infer needs the API
key when one is configured.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app import __version__
from app.deps import NOT_READY_HEADERS, AppState, get_state, model_for, model_not_found
from app.engine.classify import arrival, classify
from app.engine.streams import collect, draw_seed, start_stream
from app.http.common import timing_headers
from app.http.errors import ApiError, invalid
from app.http.openapi import schema_ref
from app.ops.logs import printable
from app.protocols.native.limits import (
    MAX_NEW_CHARS_CAP,
    SEED_MAX,
    TOP_K_CAP,
    check_generate,
    check_texts,
    default_max_new,
    fields_renamed,
)
from app.protocols.v2.schemas import (
    GENERATION_PARAMETERS,
    InferRequest,
    InferResponse,
    InputTensor,
    LiveResponse,
    ModelMetadata,
    ReadyResponse,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    ServerMetadata,
    V2Error,
)
from seqcore.sampling import SamplingParams
from seqcore.tasks import LoadedModel
from seqcore.tasks.classification import LABELS, SentimentModel
from seqcore.tasks.generation import CharModel

TAG = "open inference protocol v2"
# One router per auth class (app.main.ROUTES): the probes (open), the server and model
# metadata (behind the key with SEQSERVE_PROTECT_OPS), inference (the key).
probe_router = APIRouter(tags=[TAG])
router = APIRouter(tags=[TAG])
infer_router = APIRouter(tags=[TAG])

HEADER_LENGTH = "inference-header-content-length"
DEFAULT_MAX_NEW_CHARS = 200  # as POST /generate
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": V2Error, "description": d} for s, d in {
        400: "body is not JSON, or binary tensor data does not match its sizes",
        401: "API key missing or wrong", 404: "no loaded model of that name (and version)",
        413: "body over SEQSERVE_MAX_BODY_BYTES", 422: "invalid tensor or parameter",
        503: "overloaded, starting or shutting down (Retry-After)",
        504: "no answer in time"}.items()}


def _shown(value: str) -> str:
    """A client's string in a message: quoted, controls escaped, at most 80 characters."""
    return printable(repr(value), 80)


def _loaded(state: AppState, name: str, version: str | None) -> LoadedModel:
    """The loaded model ``name`` (looked up among loaded models only, never a path),
    of ``version`` when one is given."""
    m = model_for(state, None, name, version)
    if not isinstance(m, SentimentModel | CharModel):  # a task this protocol does not serve
        raise model_not_found(state, None, name, version)
    return m


def _metadata(m: LoadedModel) -> dict[str, Any]:
    if isinstance(m, SentimentModel):
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "probabilities", "datatype": "FP32",
                    "shape": [-1, len(m.labels)]},
                   {"name": "label", "datatype": "BYTES", "shape": [-1]}]
        parameters: list[dict] = []
    else:
        inputs = [{"name": "prompt", "datatype": "BYTES", "shape": [1]}]
        outputs = [{"name": "text", "datatype": "BYTES", "shape": [1]}]
        parameters = [
            {"name": "max_new_chars", "datatype": "INT64", "default": DEFAULT_MAX_NEW_CHARS,
             "minimum": 1, "maximum": MAX_NEW_CHARS_CAP,
             "description": "characters to generate at most (also SEQSERVE_MAX_NEW_CHARS)"},
            {"name": "temperature", "datatype": "FP64", "default": 1.0, "minimum": 0,
             "maximum": 10, "description": "p_i ~ exp(log p_i / T); 0 = greedy"},
            {"name": "top_k", "datatype": "INT64", "default": None, "minimum": 1,
             "maximum": TOP_K_CAP, "description": "sample among the k likeliest only"},
            {"name": "top_p", "datatype": "FP64", "default": None, "minimum": 0, "maximum": 1,
             "description": "nucleus sampling mass (> 0)"},
            {"name": "seed", "datatype": "INT64", "default": None, "minimum": 0,
             "maximum": SEED_MAX, "description": "same seed, same text; drawn if absent"}]
    return {"name": m.name, "versions": [m.version], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs, "parameters": parameters, "task": m.task}


@router.get("/v2", response_model=ServerMetadata, operation_id="v2_server_metadata",
            summary="Server metadata: name, version, protocol extensions")
async def server_metadata() -> dict:
    return {"name": "seqserve", "version": __version__, "extensions": ["binary_tensor_data"]}


@probe_router.get("/v2/health/live", response_model=LiveResponse, operation_id="v2_server_live",
            summary="Liveness (as /healthz)")
async def server_live() -> dict:
    return {"live": True}


@probe_router.get("/v2/health/ready", response_model=ReadyResponse, operation_id="v2_server_ready",
            responses={503: {"model": ReadyResponse, "description": "not ready, with the reason"}},
            summary="Readiness (as /readyz): every model loaded and warmed up")
async def server_ready(state: AppState = Depends(get_state)) -> JSONResponse:
    reason = state.not_ready()
    if reason:
        return JSONResponse({"ready": False, "reason": reason}, status_code=503,
                            headers=NOT_READY_HEADERS)
    return JSONResponse({"ready": True})


@router.post("/v2/repository/index", response_model=list[RepositoryIndexEntry],
             operation_id="v2_repository_index",
             openapi_extra={"requestBody": {"required": False, "content": {
                 "application/json": {"schema": schema_ref(RepositoryIndexRequest)}}}},
             responses={s: V2_ERRORS[s] for s in (400, 401, 413, 422)},
             summary="Model repository index (Triton): every loaded model, its version "
                     "and state; the body (optional) `{\"ready\": true}` lists ready ones only")
async def repository_index(request: Request, state: AppState = Depends(get_state)) -> list:
    raw = await request.body()
    ready_only = False
    if raw.strip():
        try:
            ready_only = bool(RepositoryIndexRequest.model_validate_json(raw).ready)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(e["type"] == "json_invalid" for e in errors):
                raise ApiError(400, "invalid_json", "body: not parseable as JSON") from None
            raise RequestValidationError(errors) from None
    server_reason = state.not_ready()
    out = []
    for m in (state.registry.models.values() if state.registry else []):
        reason = server_reason or (None if m.warm else "warming up")
        if ready_only and reason:
            continue
        out.append({"name": m.name, "version": m.version,
                    "state": "UNAVAILABLE" if reason else "READY", "reason": reason or ""})
    return out



# Each route with a version is its own function (not a second decorator on the same
# one): a path parameter must be required, or generated clients drop the operation.
@router.get("/v2/models/{model_name}", response_model=ModelMetadata,
            operation_id="v2_model_metadata", responses={404: V2_ERRORS[404]},
            summary="Model metadata: inputs, outputs, request parameters")
async def model_metadata(model_name: str, state: AppState = Depends(get_state)) -> dict:
    return _metadata(_loaded(state, model_name, None))


@router.get("/v2/models/{model_name}/versions/{model_version}", response_model=ModelMetadata,
            operation_id="v2_model_version_metadata", responses={404: V2_ERRORS[404]},
            summary="Model metadata of one version")
async def model_version_metadata(model_name: str, model_version: str,
                                 state: AppState = Depends(get_state)) -> dict:
    return _metadata(_loaded(state, model_name, model_version))


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: V2_ERRORS[404], 503: {"model": ReadyResponse, "description": "not ready"}}


@probe_router.get("/v2/models/{model_name}/ready", response_model=ReadyResponse,
            operation_id="v2_model_ready", responses=READY_RESPONSES,
            summary="Model readiness: loaded and warmed up, and the server ready")
async def model_ready(model_name: str, state: AppState = Depends(get_state)) -> JSONResponse:
    return _ready(state, _loaded(state, model_name, None))


@probe_router.get("/v2/models/{model_name}/versions/{model_version}/ready",
            response_model=ReadyResponse, operation_id="v2_model_version_ready",
            responses=READY_RESPONSES, summary="Readiness of one model version")
async def model_version_ready(model_name: str, model_version: str,
                              state: AppState = Depends(get_state)) -> JSONResponse:
    return _ready(state, _loaded(state, model_name, model_version))


def _ready(state: AppState, m: LoadedModel) -> JSONResponse:
    reason = state.not_ready() or (None if m.warm else "warming up")
    if reason:
        return JSONResponse({"name": m.name, "ready": False, "reason": reason},
                            status_code=503, headers=NOT_READY_HEADERS)
    return JSONResponse({"name": m.name, "ready": True})


# -- infer ------------------------------------------------------------------------------

def _parse(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The JSON header (the whole body, or its first Inference-Header-Content-Length
    bytes) and the binary tensor data after it."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 < n <= len(body):
            raise ApiError(400, "bad_request", "Inference-Header-Content-Length: not a "
                           f"length within the body ({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        raw = json.loads(head)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "body: not parseable as JSON (malformed, too "
                       "deeply nested, or not UTF-8)") from None
    try:
        return InferRequest.model_validate(raw), binary
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: nesting depth is bounded by the JSON parser, not the stack
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _bytes_elements(t: InputTensor, i: int, binary: bytes, offset: int) -> tuple[list[str], int]:
    """The elements of BYTES input ``t`` (number ``i``) as text, and the offset of the
    next binary tensor."""
    field = f"inputs.{i}"
    if t.datatype != "BYTES":
        raise invalid(f"{field}.datatype", f"must be BYTES (got {_shown(t.datatype)})")
    size = t.parameters.binary_data_size if t.parameters else None
    if size is not None:
        if t.data is not None:
            raise invalid(f"{field}.data", "give data or binary_data_size, not both")
        if offset + size > len(binary):
            raise ApiError(400, "bad_request", f"{field}: binary_data_size {size} is past "
                           f"the end of the binary data ({len(binary)} bytes)")
        raw, elements, pos = binary[offset:offset + size], [], 0
        while pos < len(raw):  # each element: a 4-byte little-endian length, then bytes
            if pos + 4 > len(raw):
                raise ApiError(400, "bad_request", f"{field}: truncated BYTES element")
            (n,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + n > len(raw):
                raise ApiError(400, "bad_request", f"{field}: truncated BYTES element")
            elements.append(raw[pos + 4:pos + 4 + n])
            pos += 4 + n
        texts = []
        for j, e in enumerate(elements):
            try:
                texts.append(e.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid(f"{field}.data.{j}", "not valid UTF-8") from None
        offset += size
    else:
        if t.data is None:
            raise invalid(f"{field}.data", "field required (or binary_data_size)")
        texts = _flatten(t.data)
        for j, e in enumerate(texts):
            if not isinstance(e, str):
                raise invalid(f"{field}.data.{j}", "BYTES elements must be strings")
    count = math.prod(t.shape)  # Python integers: no overflow
    if count != len(texts):
        raise invalid(f"{field}.shape", f"{t.shape} holds {count} elements, data has "
                      f"{len(texts)}")
    return texts, offset


def _inputs(req: InferRequest, binary: bytes, expected: str) -> list[str]:
    texts: list[str] | None = None
    offset = 0
    for i, t in enumerate(req.inputs):
        if t.name != expected:
            raise invalid(f"inputs.{i}.name", f"unknown input {_shown(t.name)} (this model "
                          f"takes {expected!r})")
        if texts is not None:
            raise invalid(f"inputs.{i}.name", f"input {expected!r} given twice")
        texts, offset = _bytes_elements(t, i, binary, offset)
    if offset != len(binary):
        raise ApiError(400, "bad_request", f"{len(binary) - offset} bytes of binary data "
                       "belong to no input")
    assert texts is not None
    return texts


def _bytes_tensor(items: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in items))


def _answer(req: InferRequest, m: LoadedModel, outputs: dict[str, tuple[str, list[int], Any]],
            headers: dict[str, str], parameters: dict[str, Any] | None = None) -> Response:
    """The infer answer: the requested ``outputs`` (all by default), each as JSON data or,
    when asked for, as binary data after the JSON header."""
    names = list(outputs)
    binary_default = bool(req.parameters and req.parameters.binary_data_output)
    wanted: list[tuple[str, bool]] = [(n, binary_default) for n in names]
    if req.outputs is not None:
        wanted = []
        for i, o in enumerate(req.outputs):
            if o.name not in outputs:
                raise invalid(f"outputs.{i}.name", f"unknown output {_shown(o.name)} (this "
                              f"model has {names})")
            flag = o.parameters.binary_data if o.parameters else None
            wanted.append((o.name, binary_default if flag is None else flag))
    tensors, blobs = [], []
    for name, as_binary in wanted:
        datatype, shape, value = outputs[name]
        t: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            blob = (_bytes_tensor(value) if datatype == "BYTES"
                    else np.ascontiguousarray(value, dtype="<f4").tobytes())
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = (value if datatype == "BYTES"
                         else np.asarray(value, dtype=np.float32).ravel().tolist())
        tensors.append(t)
    doc: dict[str, Any] = {"model_name": m.name, "model_version": m.version}
    if req.id is not None:
        doc["id"] = req.id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = tensors
    head = json.dumps(doc, ensure_ascii=False).encode()
    if not blobs:
        return Response(head, media_type="application/json", headers=headers)
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={**headers, "Inference-Header-Content-Length": str(len(head))})


async def _infer_sentiment(state: AppState, request: Request, m: SentimentModel,
                           req: InferRequest, binary: bytes) -> Response:
    for name in GENERATION_PARAMETERS:
        if req.parameters is not None and getattr(req.parameters, name) is not None:
            raise invalid(f"parameters.{name}", "applies to text-generation models only")
    texts = _inputs(req, binary, "text")
    with fields_renamed({"texts": "text"}):
        check_texts(texts, state.settings)
    _, rows = await classify(arrival(request.scope), state.loops[m.name], m,  # type: ignore[arg-type]
                             texts, offsets=False, queue_timeout_s=state.settings.queue_timeout_s)
    headers = timing_headers(max(r.queue_s for r in rows), max(r.inference_s for r in rows))
    if m.multi or m.labels != LABELS:  # columns in the model's label order (parameters)
        answers = [m.probabilities(r.probability) for r in rows]
        probs = np.array([list(a.values()) for a in answers], dtype=np.float32)
        labels = [m.label_of(r.probability) for r in rows]
        return _answer(req, m, {"probabilities": ("FP32", [len(texts), len(m.labels)], probs),
                                "label": ("BYTES", [len(texts)], labels)}, headers,
                       parameters={"labels": list(m.labels)})
    p = np.array([r.probability for r in rows], dtype=np.float64)
    probs = np.stack([1.0 - p, p], axis=1).astype(np.float32)
    labels = ["positive" if x >= 0.5 else "negative" for x in p]
    return _answer(req, m, {"probabilities": ("FP32", [len(texts), 2], probs),
                            "label": ("BYTES", [len(texts)], labels)}, headers)


async def _infer_chargen(state: AppState, request: Request, m: CharModel, req: InferRequest,
                         binary: bytes) -> Response:
    s = state.settings
    texts = _inputs(req, binary, "prompt")
    if len(texts) != 1:
        raise invalid("inputs.0.shape", f"one prompt per request (got {len(texts)})")
    prompt = texts[0]
    p = req.parameters
    max_new = p.max_new_chars if p and p.max_new_chars is not None else default_max_new(
        DEFAULT_MAX_NEW_CHARS, s)
    with fields_renamed({"max_new_chars": "parameters.max_new_chars"}):
        check_generate(prompt, max_new, [], s)
    seed = p.seed if p and p.seed is not None else draw_seed()
    params = SamplingParams(p.temperature if p and p.temperature is not None else 1.0,
                            p.top_k if p else None, p.top_p if p else None)
    stream, _ = start_stream(state.loops, m, prompt, arrived=arrival(request.scope),
                             max_new=max_new, params=params, seed=seed, stop=[],
                             streaming=False)
    ((text, fin),) = await collect(request.receive, [stream], s.gen_timeout_s)
    headers = timing_headers(fin.queue_s, fin.ttfc_s - fin.queue_s,
                             time_to_first_char=fin.ttfc_s * 1000,
                             time_per_char=fin.per_char_s * 1000)
    return _answer(req, m, {"text": ("BYTES", [1], [text])}, headers, parameters={
        "seed": seed, "finish_reason": fin.reason, "generated_chars": fin.generated_chars})


INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": schema_ref(InferRequest)}}}}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {**V2_ERRORS, 200: {
    "description": "the outputs; with binary outputs asked for, the JSON header "
                   "(Inference-Header-Content-Length bytes) then the tensors' bytes",
    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}}


@infer_router.post("/v2/models/{model_name}/infer", response_model=InferResponse,
                   operation_id="v2_model_infer", responses=INFER_RESPONSES, openapi_extra=INFER_DOC,
                   summary="Inference: sentiment (text -> probabilities, label) or chargen "
                           "(prompt + parameters -> text)")
async def model_infer(model_name: str, request: Request,
                      state: AppState = Depends(get_state)) -> Response:
    return await _infer(state, request, _loaded(state, model_name, None))


@infer_router.post("/v2/models/{model_name}/versions/{model_version}/infer",
                   response_model=InferResponse, operation_id="v2_model_version_infer",
                   responses=INFER_RESPONSES, openapi_extra=INFER_DOC,
                   summary="Inference on one model version")
async def model_version_infer(model_name: str, model_version: str, request: Request,
                              state: AppState = Depends(get_state)) -> Response:
    return await _infer(state, request, _loaded(state, model_name, model_version))


async def _infer(state: AppState, request: Request, m: LoadedModel) -> Response:
    req, binary = _parse(await request.body(), request.headers.get(HEADER_LENGTH))
    if isinstance(m, SentimentModel):
        return await _infer_sentiment(state, request, m, req, binary)
    return await _infer_chargen(state, request, m, req, binary)  # type: ignore[arg-type]
