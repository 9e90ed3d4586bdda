"""POST /generate: temperature sampling from the character generator, optionally streamed.

Streaming uses Server-Sent Events: each event is ``data: {json}``; text events carry
``{"text": chunk, "finish_reason": null}``, the last event carries the finish reason,
``generated_chars``, ``seed`` and timings. An error after the stream started arrives
as ``event: error`` with the usual error body. A client that disconnects frees its
slot at the next step. ``POST /generate/stream`` is the same stream as its own
operation, so that a client generated from the OpenAPI schema has one response type
per operation.

The way into the generation engine is ``app.engine.streams`` (``start_stream``,
``collect``, ``first_output``, ``chunks``), the same for every protocol.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.deps import AppState, model_for
from app.engine.classify import arrival
from app.engine.errors import EngineError
from app.engine.generator import Finish, Stream
from app.engine.streams import chunks, collect, draw_seed, first_output, start_stream
from app.http.common import ERROR_RESPONSES, json_body, parse_body, timing_headers
from app.http.errors import ApiError, api_error, error_body
from app.http.openapi import sse_response
from app.protocols.native.limits import check_generate, default_max_new
from app.protocols.native.schemas import GenerateRequest, GenerateResponse
from app.protocols.native.stream import GenerateStreamEvent
from seqcore.sampling import SamplingParams
from seqcore.tasks.generation import CharModel

router = APIRouter(tags=["inference"])

def _model(state: AppState, name: str | None) -> CharModel:
    return model_for(state, CharModel.task, name)  # type: ignore[return-value]


def _start(state: AppState, request: Request, body: GenerateRequest, streaming: bool
           ) -> tuple[Stream, dict]:
    if "max_new_chars" not in body.model_fields_set:
        body.max_new_chars = default_max_new(body.max_new_chars, state.settings)
    check_generate(body.prompt, body.max_new_chars, body.stop, state.settings)
    model = _model(state, body.model)
    seed = body.seed if body.seed is not None else draw_seed()
    stream, n_unknown = start_stream(
        state.loops, model, body.prompt, arrived=arrival(request.scope),
        max_new=body.max_new_chars,
        params=SamplingParams(body.temperature, body.top_k, body.top_p), seed=seed,
        stop=body.stop, streaming=streaming)
    meta = {"seed": seed, "prompt_chars": len(body.prompt), "unknown_prompt_chars": n_unknown,
            "model": model.name, "model_version": model.version}
    return stream, meta


@router.post("/generate", response_model=GenerateResponse, operation_id="generate_text",
             openapi_extra=json_body(GenerateRequest),
             responses={**ERROR_RESPONSES, 200: sse_response(
                 GenerateStreamEvent, "the continuation, or with stream=true an SSE stream "
                 "(the same as POST /generate/stream)")},
             summary="Continue a prompt character by character (temperature / top-k / top-p)")
async def generate(request: Request):
    body = await parse_body(request, GenerateRequest)
    state: AppState = request.app.state.seqserve
    stream, meta = _start(state, request, body, streaming=body.stream)
    if body.stream:
        return await _streaming(stream, meta, state.settings.gen_timeout_s)
    ((text, item),) = await collect(request.receive, [stream], state.settings.gen_timeout_s)
    headers = timing_headers(item.queue_s, item.ttfc_s - item.queue_s,
                             time_to_first_char=item.ttfc_s * 1000,
                             time_per_char=item.per_char_s * 1000)
    resp = GenerateResponse(text=text, finish_reason=item.reason,  # type: ignore[arg-type]
                            generated_chars=item.generated_chars, **meta)
    return JSONResponse(resp.model_dump(), headers=headers)


@router.post("/generate/stream", operation_id="generate_text_stream",
             openapi_extra=json_body(GenerateRequest),
             response_class=StreamingResponse,
             responses={**ERROR_RESPONSES, 200: sse_response(
                 GenerateStreamEvent, "Server-Sent Events: text chunks, then the finish")},
             summary="POST /generate as a Server-Sent Events stream, whatever `stream` says")
async def generate_stream(request: Request) -> StreamingResponse:
    body = await parse_body(request, GenerateRequest)
    state: AppState = request.app.state.seqserve
    stream, meta = _start(state, request, body, streaming=True)
    return await _streaming(stream, meta, state.settings.gen_timeout_s)


def _sse(obj: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n").encode()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _streaming(stream: Stream, meta: dict, timeout_s: float) -> StreamingResponse:
    first = await first_output(stream, timeout_s)
    queue_s = time.perf_counter() - stream.arrived
    deadline = time.perf_counter() + timeout_s

    async def events() -> AsyncIterator[bytes]:
        try:
            async for item in chunks(stream, first, deadline):
                if isinstance(item, Finish):
                    yield _sse({"text": "", "finish_reason": item.reason,
                                "generated_chars": item.generated_chars, **meta,
                                "queue_time_ms": round(item.queue_s * 1000, 3),
                                "time_to_first_char_ms": round(item.ttfc_s * 1000, 3),
                                "time_per_char_ms": round(item.per_char_s * 1000, 4)})
                else:
                    yield _sse({"text": item, "finish_reason": None})
        except (ApiError, EngineError) as exc:
            e = api_error(exc)
            yield _sse(error_body(e.status, e.code, e.message), event="error")
        except TimeoutError:
            yield _sse(error_body(504, "timeout", "generation did not finish in time"),
                       event="error")
        finally:
            stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        **SSE_HEADERS, "X-Queue-Time-Ms": f"{queue_s * 1000:.3f}"})
