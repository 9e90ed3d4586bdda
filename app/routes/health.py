"""Operations routes, open without an API key: liveness, readiness, models, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.schemas import ModelList
from app.state import AppState, get_state

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up and its event loop answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 200 only when every model is loaded and warmed up",
            responses={503: {"description": "not ready, with the reason"}})
async def readyz(state: AppState = Depends(get_state)) -> JSONResponse:
    if not state.ready:
        return JSONResponse({"status": "not_ready", "reason": state.not_ready_reason},
                            status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "models": sorted(state.registry.models)})  # type: ignore[union-attr]


@router.get("/v1/models", response_model=ModelList,
            summary="Loaded models: name, version, task, provider, metrics from the manifest")
async def models(state: AppState = Depends(get_state)) -> dict:
    loaded = state.registry.models.values() if state.registry else []
    return {"models": [m.describe() for m in loaded]}


@router.get("/metrics", summary="Prometheus metrics (text exposition format)",
            response_class=Response)
async def prometheus_metrics() -> Response:
    data, ctype = metrics.render()
    return Response(data, media_type=ctype)
