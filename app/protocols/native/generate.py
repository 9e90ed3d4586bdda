"""POST /generate: temperature sampling from the character generator, optionally streamed.

Streaming uses Server-Sent Events: each event is ``data: {json}``; text events carry
``{"text": chunk, "finish_reason": null}``, the last event carries the finish reason,
``generated_chars``, ``seed`` and timings. An error after the stream started arrives
as ``event: error`` with the usual error body. A client that disconnects frees its
slot at the next step. ``POST /generate/stream`` is the same stream as its own
operation, so that a client generated from the OpenAPI schema has one response type
per operation.

``start_stream``, ``collect``, ``first_output`` and ``chunks`` are the one way into
the generation engine: the OpenAI-compatible completions and the Open Inference
Protocol routes use them too, so every protocol gets the same queueing, limits,
timeouts and disconnect handling.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.deps import AppState, model_for
from app.engine.generator import Finish, Stream
from app.http.common import ERROR_RESPONSES, json_body, parse_body, timing_headers
from app.http.errors import ApiError, error_body
from app.http.openapi import sse_response
from app.protocols.native.limits import check_generate, default_max_new
from app.protocols.native.schemas import GenerateRequest, GenerateResponse
from app.protocols.native.stream import GenerateStreamEvent
from seqcore.sampling import SamplingParams
from seqcore.tasks.generation import CharModel

router = APIRouter(tags=["inference"])

# Seeds drawn by the server stay below 2**53: JSON numbers are doubles in JavaScript,
# and a larger seed would come back rounded, so "replay with the returned seed" would
# give another text in a browser. Seeds a caller sends may use the whole int64 range.
DRAWN_SEED_BITS = 53


def draw_seed() -> int:
    return secrets.randbits(DRAWN_SEED_BITS)


def _model(state: AppState, name: str | None) -> CharModel:
    return model_for(state, CharModel.task, name)  # type: ignore[return-value]


async def _next(stream: Stream) -> str | Finish:
    item = await stream.out.get()
    if isinstance(item, ApiError):
        raise item
    return item  # type: ignore[return-value]


class ClientGone(ApiError):
    """The client closed the connection before its answer (nginx's 499; nobody reads it)."""

    def __init__(self) -> None:
        super().__init__(499, "client_closed_request", "the client closed the connection")


async def _watch_disconnect(request: Request, streams: list[Stream]) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            for stream in streams:
                stream.cancel()
                # The engine drops a cancelled stream without a word: wake the handler,
                # or it would wait until gen_timeout_s (and hold up a graceful shutdown).
                stream.out.put_nowait(ClientGone())
            return


def start_stream(state: AppState, request: Request, model: CharModel, prompt: str, *,
                 max_new: int, params: SamplingParams, seed: int, stop: list[str],
                 streaming: bool, min_new: int = 0) -> tuple[Stream, int]:
    """Queue one generation in the model's engine (503 when its queue is full);
    returns the stream and the number of prompt characters read as <unk>. The prompt
    and limits must have passed ``check_generate``; ``min_new``: no stop sequence
    ends the text before that many characters."""
    assert model.vocab is not None
    prompt_ids, n_unknown = model.vocab.encode(prompt)
    arrived = request.scope.get("state", {}).get("arrived", time.perf_counter())
    stream = Stream(prompt_ids=prompt_ids, params=params, seed=seed, max_new=max_new,
                    stop=list(stop), arrived=arrived, loop=asyncio.get_running_loop(),
                    streaming=streaming, min_new=min_new)
    state.loops[model.name].submit(stream)  # type: ignore[arg-type]
    return stream, n_unknown


async def collect(request: Request, streams: list[Stream], timeout_s: float
                  ) -> list[tuple[str, Finish]]:
    """The whole text and the finish of each stream (run side by side), 504 after
    ``timeout_s``; a client that disconnects cancels them all."""

    async def one(stream: Stream) -> tuple[str, Finish]:
        chunks: list[str] = []
        while True:
            item = await _next(stream)
            if isinstance(item, Finish):
                return "".join(chunks), item
            chunks.append(item)

    watcher = asyncio.create_task(_watch_disconnect(request, streams))
    # one stream (every /generate) is awaited directly: no task to create per request
    tasks = [asyncio.create_task(one(s)) for s in streams] if len(streams) > 1 else []
    try:
        async with asyncio.timeout(timeout_s):
            if not tasks:
                return [await one(streams[0])]
            return list(await asyncio.gather(*tasks))
    except TimeoutError:
        raise ApiError(504, "timeout", "generation did not finish in time") from None
    finally:
        watcher.cancel()
        for task in tasks:  # the others, when one failed: nobody would read them
            task.cancel()
        for stream in streams:
            stream.cancel()  # no-op when finished; frees the slot otherwise


async def first_output(stream: Stream, timeout_s: float) -> str | Finish:
    """The stream's first output. A streaming answer waits for it before sending its
    headers, so a request refused in the queue still gets a proper status code."""
    try:
        async with asyncio.timeout(timeout_s):  # (wait_for would make a task per call)
            return await _next(stream)
    except TimeoutError:
        stream.cancel()
        raise ApiError(504, "timeout", "generation did not start in time") from None
    except BaseException:
        stream.cancel()
        raise


async def chunks(stream: Stream, first: str | Finish, deadline: float
                 ) -> AsyncIterator[str | Finish]:
    """Text chunks from ``first`` on (what is already waiting is joined into one
    chunk), then the Finish. Raises the engine's ApiError, or TimeoutError at
    ``deadline`` (a ``time.perf_counter()`` value); the caller cancels the stream."""
    item: str | Finish = first
    while True:
        if isinstance(item, Finish):
            yield item
            return
        parts: list[str] = [item]
        nxt: object = None
        while not stream.out.empty():
            nxt = stream.out.get_nowait()
            if not isinstance(nxt, str):
                break  # a Finish or an error ends the chunk
            parts.append(nxt)
            nxt = None
        yield "".join(parts)
        if isinstance(nxt, ApiError):
            raise nxt
        if isinstance(nxt, Finish):
            item = nxt
            continue
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.001)):
            item = await _next(stream)


def _start(state: AppState, request: Request, body: GenerateRequest, streaming: bool
           ) -> tuple[Stream, dict]:
    if "max_new_chars" not in body.model_fields_set:
        body.max_new_chars = default_max_new(body.max_new_chars, state.settings)
    check_generate(body.prompt, body.max_new_chars, body.stop, state.settings)
    model = _model(state, body.model)
    seed = body.seed if body.seed is not None else draw_seed()
    stream, n_unknown = start_stream(
        state, request, model, body.prompt, max_new=body.max_new_chars,
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
    ((text, item),) = await collect(request, [stream], state.settings.gen_timeout_s)
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
        except ApiError as e:
            yield _sse(error_body(e.status, e.code, e.message), event="error")
        except TimeoutError:
            yield _sse(error_body(504, "timeout", "generation did not finish in time"),
                       event="error")
        finally:
            stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        **SSE_HEADERS, "X-Queue-Time-Ms": f"{queue_s * 1000:.3f}"})
