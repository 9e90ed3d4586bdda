"""POST /sentiment and POST /attention: the classifier, through the batching loop.

One request path, in named stages: ``parse_body`` (decode and validate the JSON in one
pydantic-core call), ``check_text(s)`` (the limits set by settings), ``model_for``
(the named or default classifier), ``classify`` (encode: tokenize; then the batching
loop: batch, run, unbatch) and the model's decode stage (``SentimentModel.result`` and
``explanation``). The API key was checked before the body was read
(app/http/layer.py), and errors of every stage become responses in one place
(app/http/errors.py).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import AppState, model_for
from app.engine.batcher import RowResult
from app.engine.classify import arrival, classify, run_rows
from app.http.common import ERROR_RESPONSES, json_body, parse_body, timing_headers
from app.http.errors import ApiError
from app.protocols.native.limits import check_text, check_texts
from app.protocols.native.schemas import (
    AttentionRequest,
    AttentionResponse,
    SentimentBatchResponse,
    SentimentRequest,
    SentimentResult,
)
from seqcore import faithfulness as faith
from seqcore.tasks.classification import SentimentModel

router = APIRouter(tags=["inference"])


def classifier(state: AppState, name: str | None) -> SentimentModel:
    return model_for(state, SentimentModel.task, name)  # type: ignore[return-value]


@router.post("/sentiment", response_model=SentimentResult | SentimentBatchResponse,
             responses=ERROR_RESPONSES, operation_id="classify_sentiment",
             openapi_extra=json_body(SentimentRequest),
             summary="Classify one text ({text}) or several ({texts}) as positive/negative")
async def sentiment(request: Request) -> JSONResponse:
    body = await parse_body(request, SentimentRequest)
    state: AppState = request.app.state.seqserve
    s = state.settings
    if body.text is not None:
        texts = [body.text]
        check_text("text", body.text, s.max_text_chars)
    else:
        texts = body.texts or []
        check_texts(texts, s)
    model = classifier(state, body.model)
    encoded, rows = await classify(arrival(request.scope), state.loops[model.name], model,
                                   texts, offsets=False, queue_timeout_s=s.queue_timeout_s)
    headers = timing_headers(max(r.queue_s for r in rows), max(r.inference_s for r in rows))
    results = [model.result(r.probability, e) for r, e in zip(rows, encoded, strict=True)]
    if body.text is not None:
        return JSONResponse(results[0], headers=headers)
    return JSONResponse({"results": results, "model": model.name,
                         "model_version": model.version}, headers=headers)


@router.post("/attention", response_model=AttentionResponse, responses=ERROR_RESPONSES,
             operation_id="explain_attention", openapi_extra=json_body(AttentionRequest),
             summary="Classify a text and return the attention weight of every token read")
async def attention(request: Request) -> JSONResponse:
    body = await parse_body(request, AttentionRequest)
    state: AppState = request.app.state.seqserve
    check_text("text", body.text, state.settings.max_text_chars)
    model = classifier(state, body.model)
    if not model.has_attention:  # an imported graph without attention weights
        raise ApiError(400, "model_not_supported",
                       f"model: {model.name!r} has no attention output, so /attention cannot "
                       "explain its answers; /sentiment serves it",
                       details=[{"field": "model", "message": "this model has no attention"}])
    arrived = arrival(request.scope)
    (e,), (row,) = await classify(arrived, state.loops[model.name], model, [body.text],
                                  offsets=True, queue_timeout_s=state.settings.queue_timeout_s)
    answer = model.explanation(body.text, e, row)
    queue_s, inference_s = row.queue_s, row.inference_s
    if body.faithfulness:
        answer["faithfulness"], extra = await faithfulness_scores(arrived, state, model,
                                                                  e.ids, row)
        queue_s = max([queue_s, *(r.queue_s for r in extra)])
        inference_s += max(r.inference_s for r in extra)
    return JSONResponse(answer, headers=timing_headers(queue_s, inference_s))


async def faithfulness_scores(arrived: float, state: AppState, model: SentimentModel,
                              ids: list[int], row: RowResult
                              ) -> tuple[list[dict], list[RowResult]]:
    """ERASER's comprehensiveness and sufficiency (seqcore/faithfulness.py) of the
    attention weights, and of the n-gram contributions when the model has them, at
    each k of ``faith.KS``: the reduced rows (the text without its top-k tokens, and
    them alone) go to the batching loop together, so they run as rows of one batch
    (one call more; the ranking needs the first call's answer)."""
    ids = ids or [model.tokenizer.unk_id if model.tokenizer else 1]
    unk = model.tokenizer.unk_id if model.tokenizer else 1
    rankings = [("attention", row.attention.tolist())]
    if row.ngrams is not None:
        rankings.append(("ngrams", faith.toward_prediction(row.ngrams, row.probability)))
    rows = [r for _, imp in rankings for r in faith.reduced_rows(ids, imp, faith.KS, unk)]
    results = await run_rows(arrived, state.loops[model.name], rows,  # type: ignore[arg-type]
                             state.settings.queue_timeout_s)
    per = 2 * len(faith.KS)
    out = []
    for j, (name, imp) in enumerate(rankings):
        reduced = [r.probability for r in results[j * per:(j + 1) * per]]
        if model.multi:  # the predicted label's probability, as P(positive) of a positive
            c = int(np.argmax(row.probability))
            got = faith.scores(1.0, [1.0 - float(row.probability[c]) + float(p[c])
                                     for p in reduced], faith.KS)
        else:
            got = faith.scores(row.probability, reduced, faith.KS)
        for k, g in zip(faith.KS, got, strict=True):
            out.append({"explanation": name, "k": k,
                        "tokens": len(faith.top_k(imp, k)), **g})
    return out, results
