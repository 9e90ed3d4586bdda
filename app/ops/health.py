"""Operations routes, open without an API key: liveness (/healthz, and /health as vLLM
and TGI name it), readiness, models, metrics.

The model list is in OpenAI's shape (``object: "list"``, ``data``) so that OpenAI's
clients list the models; each entry keeps every detail field, and ``endpoints``, the
routes that serve the model (a sentiment model is not served by the completion
routes); the same entries are also under ``models``, the key of earlier versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from app.deps import NOT_READY_HEADERS, AppState, get_state, model_for
from app.ops import metrics
from app.ops.cards import model_card
from app.protocols.openai.schemas import ModelCard, ModelCardList, OpenAIErrorResponse
from seqcore.tasks import LoadedModel

# One router per policy (app.main.ROUTES): the probes (open), the model listing (OpenAI's
# protocol, behind the key with SEQSERVE_PROTECT_OPS), the metrics (the same).
router = APIRouter(tags=["operations"])
models_router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


# HEAD answers like GET without the body (probes and load balancers use it); it is left
# out of the schema, where it would be a second operation with the same id.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", operation_id="check_liveness",
            summary="Liveness: the process is up and its event loop answers")
async def healthz() -> dict:
    return {"status": "ok"}


# vLLM's and TGI's path for the same check: tools written for them (guidellm's start-up
# check, load balancers' defaults) probe GET /health
@router.head("/health", include_in_schema=False)
@router.get("/health", operation_id="check_health",
            summary="Liveness, as vLLM and TGI serve it: the same answer as /healthz")
async def health() -> dict:
    return await healthz()


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", operation_id="check_readiness",
            summary="Readiness: 200 only when every model is loaded and warmed up, "
            "and every batching and generation thread runs",
            responses={503: {"description": "not ready, with the reason"}})
async def readyz(state: AppState = Depends(get_state)) -> JSONResponse:
    reason = state.not_ready()
    if reason is not None:
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503,
                            headers=NOT_READY_HEADERS)
    return JSONResponse({"status": "ready", "models": sorted(state.registry.models)})  # type: ignore[union-attr]


@models_router.get("/v1/models", response_model=ModelCardList, operation_id="list_models",
            summary="Loaded models, in OpenAI's list shape (`data`; `models` holds the same "
                    "entries for earlier clients): name, version, task, provider, metrics")
async def models(state: AppState = Depends(get_state)) -> dict:
    loaded = state.registry.models.values() if state.registry else []
    cards = [_card(state, m) for m in loaded]
    return {"object": "list", "data": cards, "models": cards}


def _card(state: AppState, m: LoadedModel) -> dict:
    """``model_card``, and ``default``: whether a request of its task that names no
    model gets this one (SEQSERVE_DEFAULT_MODELS, app/engine/registry.py)."""
    return {**model_card(m), "default": bool(state.registry and state.registry.is_default(m))}


@models_router.get("/v1/models/{model_id}", response_model=ModelCard, operation_id="get_model",
            responses={404: {"model": OpenAIErrorResponse, "description": "no such model"}},
            summary="One loaded model, as an entry of GET /v1/models")
async def model(model_id: str, state: AppState = Depends(get_state)) -> dict:
    return _card(state, model_for(state, None, model_id))


@metrics_router.get("/metrics", operation_id="get_metrics",
            summary="Prometheus metrics (text exposition format)", response_class=Response)
async def prometheus_metrics() -> Response:
    data, ctype = metrics.render()
    return Response(data, media_type=ctype)
