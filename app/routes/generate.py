"""POST /generate: temperature sampling from the character generator, optionally streamed.

Streaming uses Server-Sent Events: each event is ``data: {json}``; text events carry
``{"text": chunk, "finish_reason": null}``, the last event carries the finish reason,
``generated_chars``, ``seed`` and timings. An error after the stream started arrives
as ``event: error`` with the usual error body. A client that disconnects frees its
slot at the next step.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.errors import ApiError, error_body
from app.generation import Finish, Stream
from app.registry import CharModel
from app.routes.common import ERROR_RESPONSES, timing_headers
from app.sampling import SamplingParams
from app.schemas import GenerateRequest, GenerateResponse
from app.state import AppState, get_state, model_for, require_api_key
from app.validation import check_generate

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["inference"])


def _model(state: AppState, name: str | None) -> CharModel:
    return model_for(state, "text-generation", name)  # type: ignore[return-value]


async def _next(stream: Stream) -> str | Finish:
    item = await stream.out.get()
    if isinstance(item, ApiError):
        raise item
    return item  # type: ignore[return-value]


class ClientGone(ApiError):
    """The client closed the connection before its answer (nginx's 499; nobody reads it)."""

    def __init__(self) -> None:
        super().__init__(499, "client_closed_request", "the client closed the connection")


async def _watch_disconnect(request: Request, stream: Stream) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            stream.cancel()
            # The engine drops a cancelled stream without a word: wake the handler, or
            # it would wait until gen_timeout_s (and hold up a graceful shutdown).
            stream.out.put_nowait(ClientGone())
            return


@router.post("/generate", response_model=GenerateResponse, responses={
    **ERROR_RESPONSES,
    200: {"description": "the continuation, or an SSE stream when stream=true",
          "content": {"text/event-stream": {}}}},
    summary="Continue a prompt character by character (temperature / top-k / top-p)")
async def generate(body: GenerateRequest, request: Request,
                   state: AppState = Depends(get_state)):
    if "max_new_chars" not in body.model_fields_set:
        # the default (200) must not trip a server limit set lower than it
        body.max_new_chars = min(body.max_new_chars, state.settings.max_new_chars)
    check_generate(body.prompt, body.max_new_chars, body.stop, state.settings)
    model = _model(state, body.model)
    assert model.vocab is not None
    prompt_ids, n_unknown = model.vocab.encode(body.prompt)
    seed = body.seed if body.seed is not None else secrets.randbits(63)
    arrived = request.scope.get("state", {}).get("arrived", time.perf_counter())
    stream = Stream(prompt_ids=prompt_ids,
                    params=SamplingParams(body.temperature, body.top_k, body.top_p),
                    seed=seed, max_new=body.max_new_chars, stop=list(body.stop),
                    arrived=arrived, loop=asyncio.get_running_loop(), streaming=body.stream)
    engine = state.engines[model.name]
    engine.submit(stream)
    meta = {"seed": seed, "prompt_chars": len(body.prompt), "unknown_prompt_chars": n_unknown,
            "model": model.name, "model_version": model.version}
    if body.stream:
        return await _streaming(stream, meta, state.settings.gen_timeout_s)

    watcher = asyncio.create_task(_watch_disconnect(request, stream))
    chunks: list[str] = []
    try:
        async with asyncio.timeout(state.settings.gen_timeout_s):
            while True:
                item = await _next(stream)
                if isinstance(item, Finish):
                    break
                chunks.append(item)
    except TimeoutError:
        raise ApiError(504, "timeout", "generation did not finish in time") from None
    finally:
        watcher.cancel()
        stream.cancel()  # no-op when finished; frees the slot otherwise
    headers = timing_headers(item.queue_s, item.ttfc_s - item.queue_s,
                             time_to_first_char=item.ttfc_s * 1000,
                             time_per_char=item.per_char_s * 1000)
    resp = GenerateResponse(text="".join(chunks), finish_reason=item.reason,  # type: ignore[arg-type]
                            generated_chars=item.generated_chars, **meta)
    return JSONResponse(resp.model_dump(), headers=headers)


def _sse(obj: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n").encode()


async def _streaming(stream: Stream, meta: dict, timeout_s: float) -> StreamingResponse:
    # Wait for the first output before answering, so a request refused in the queue
    # still gets a proper status code, and the headers can carry the queue time.
    try:
        first = await asyncio.wait_for(_next(stream), timeout_s)
    except TimeoutError:
        stream.cancel()
        raise ApiError(504, "timeout", "generation did not start in time") from None
    except BaseException:
        stream.cancel()
        raise
    queue_s = time.perf_counter() - stream.arrived
    deadline = time.perf_counter() + timeout_s

    async def events() -> AsyncIterator[bytes]:
        item: str | Finish = first
        try:
            while True:
                if isinstance(item, Finish):
                    yield _sse({"text": "", "finish_reason": item.reason,
                                "generated_chars": item.generated_chars, **meta,
                                "queue_time_ms": round(item.queue_s * 1000, 3),
                                "time_to_first_char_ms": round(item.ttfc_s * 1000, 3),
                                "time_per_char_ms": round(item.per_char_s * 1000, 4)})
                    return
                # coalesce whatever is already waiting into one event
                parts: list[str] = [item]
                nxt: object = None
                while not stream.out.empty():
                    nxt = stream.out.get_nowait()
                    if not isinstance(nxt, str):
                        break  # a Finish or an error ends the chunk
                    parts.append(nxt)
                    nxt = None
                yield _sse({"text": "".join(parts), "finish_reason": None})
                if isinstance(nxt, ApiError):
                    raise nxt
                if isinstance(nxt, Finish):
                    item = nxt
                    continue
                remaining = deadline - time.perf_counter()
                item = await asyncio.wait_for(_next(stream), max(remaining, 0.001))
        except ApiError as e:
            yield _sse(error_body(e.status, e.code, e.message), event="error")
        except TimeoutError:
            yield _sse(error_body(504, "timeout", "generation did not finish in time"),
                       event="error")
        finally:
            stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        "X-Queue-Time-Ms": f"{queue_s * 1000:.3f}"})
