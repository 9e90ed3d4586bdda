"""POST /sentiment and POST /attention: the classifier, through the batching loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.errors import ApiError
from app.registry import SentimentModel
from app.routes.common import ERROR_RESPONSES, timing_headers
from app.schemas import (
    AttentionRequest,
    AttentionResponse,
    SentimentBatchResponse,
    SentimentRequest,
    SentimentResult,
)
from app.state import AppState, get_state, model_for, require_api_key
from app.tokenizer import Encoded, WordTokenizer
from app.validation import check_text, check_texts

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["inference"])


def _model(state: AppState, name: str | None) -> SentimentModel:
    return model_for(state, "text-classification", name)  # type: ignore[return-value]


def arrival(scope: dict) -> float:
    """When the request arrived (stamped by the request-context middleware)."""
    return scope.get("state", {}).get("arrived", time.perf_counter())


# Requests with more characters than this are tokenized in the tokenizer thread, not
# on the event loop: tokenizing costs up to ~0.6 µs a character, so a 1 MB request
# would hold every other route (/healthz included) for half a second. Below it (an
# ordinary review is ~1,300 characters) the thread hand-off would cost more than it
# saves. One thread, so large requests take turns instead of crowding the GIL.
INLINE_TOKENIZE_CHARS = 16_384
_tokenizer_pool: ThreadPoolExecutor | None = None


def _tokenizer_thread() -> ThreadPoolExecutor:
    global _tokenizer_pool
    if _tokenizer_pool is None:
        _tokenizer_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
    return _tokenizer_pool


async def encode_texts(tok: WordTokenizer, texts: list[str], offsets: bool) -> list[Encoded]:
    """``tok.encode`` of every text, off the event loop when the request is large."""
    if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
        return [tok.encode(t, offsets=offsets) for t in texts]
    return await asyncio.get_running_loop().run_in_executor(
        _tokenizer_thread(), lambda: [tok.encode(t, offsets=offsets) for t in texts])


async def classify(arrived: float, state: AppState, model: SentimentModel,
                   texts: list[str], offsets: bool) -> tuple[list[Encoded], list]:
    """Tokenize ``texts`` and run them through the batching loop. The batcher hears
    of the rows before tokenizing, so it can wait for them rather than start a call
    without them."""
    batcher = state.batchers[model.name]
    tok = model.tokenizer
    assert tok is not None
    futures: list[asyncio.Future] = []
    batcher.announce(len(texts))
    try:
        encoded = await encode_texts(tok, texts, offsets)
        for e in encoded:
            futures.append(batcher.submit(e.ids, arrived))
        timeout = state.settings.queue_timeout_s + 30.0
        if len(futures) == 1:
            return encoded, [await asyncio.wait_for(futures[0], timeout)]
        return encoded, await asyncio.wait_for(asyncio.gather(*futures), timeout)
    except TimeoutError:
        raise ApiError(504, "timeout", "the model did not answer in time") from None
    finally:
        batcher.announce(-(len(texts) - len(futures)))  # rows that never reached submit
        for f in futures:  # rows of a failed or abandoned request do not run
            if not f.done():
                f.cancel()


def _result(model: SentimentModel, p: float, e: Encoded) -> dict:
    """A SentimentResult as a plain dict: responses are built directly (the schema
    classes document them) because re-validating every answer costs ~10 % of a
    request on this path."""
    label = "positive" if p >= 0.5 else "negative"
    return {"label": label, "score": p if label == "positive" else 1.0 - p,
            "probabilities": {"negative": 1.0 - p, "positive": p},
            "model": model.name, "model_version": model.version,
            "tokens_read": len(e.ids), "truncated": e.truncated}


async def sentiment_answer(state: AppState, body: SentimentRequest, arrived: float
                           ) -> JSONResponse:
    """The answer to a schema-valid /sentiment body: the FastAPI route below and the
    fast path (app/fastpath.py) both end here."""
    s = state.settings
    texts = [body.text] if body.text is not None else body.texts
    assert texts is not None
    if body.text is not None:
        check_text("text", body.text, s.max_text_chars)
    else:
        check_texts(texts, s)
    model = _model(state, body.model)
    encoded, rows = await classify(arrived, state, model, texts, offsets=False)
    headers = timing_headers(max(r.queue_s for r in rows), max(r.inference_s for r in rows))
    results = [_result(model, r.probability, e) for r, e in zip(rows, encoded, strict=True)]
    if body.text is not None:
        return JSONResponse(results[0], headers=headers)
    return JSONResponse({"results": results, "model": model.name,
                         "model_version": model.version}, headers=headers)


@router.post("/sentiment", response_model=SentimentResult | SentimentBatchResponse,
             responses=ERROR_RESPONSES, operation_id="classify_sentiment",
             summary="Classify one text ({text}) or several ({texts}) as positive/negative")
async def sentiment(body: SentimentRequest, request: Request,
                    state: AppState = Depends(get_state)) -> JSONResponse:
    return await sentiment_answer(state, body, arrival(request.scope))


@router.post("/attention", response_model=AttentionResponse, responses=ERROR_RESPONSES,
             operation_id="explain_attention",
             summary="Classify a text and return the attention weight of every token read")
async def attention(body: AttentionRequest, request: Request,
                    state: AppState = Depends(get_state)) -> JSONResponse:
    check_text("text", body.text, state.settings.max_text_chars)
    model = _model(state, body.model)
    (e,), (row,) = await classify(arrival(request.scope), state, model, [body.text],
                                  offsets=True)
    # A text without a single token was read as one <unk>; it has no token to show.
    tokens = [{"text": t.text, "start": t.start, "end": t.end, "weight": w}
              for t, w in zip(e.tokens, row.attention.tolist(), strict=False)]
    answer = {**_result(model, row.probability, e), "tokens": tokens}
    if row.ngrams is not None:
        answer.update(ngram_answer(body.text, e, row.ngrams.tolist()))
    return JSONResponse(answer, headers=timing_headers(row.queue_s, row.inference_s))


def ngram_answer(text: str, e: Encoded, contributions: list[float]) -> dict:
    """The n-gram term's part of the answer (models that have one): its logit, and per
    token the contribution of the n-grams ending there, with the trigram's text."""
    grams = []
    for k, (t, v) in enumerate(zip(e.tokens, contributions, strict=False)):
        first = e.tokens[max(0, k - 2)]
        start = first.start if first.start <= t.start else t.start  # head/tail junction
        grams.append({"text": text[start:t.end], "start": start, "end": t.end,
                      "contribution": v})
    grams.sort(key=lambda g: -abs(g["contribution"]))
    return {"ngram_logit": float(sum(contributions)), "ngrams": grams}
