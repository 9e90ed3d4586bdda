"""Admin routes: ``POST /v1/models/{name}/reload``.

Reloads one model from its folder (app/reload.py): 200 with the outcome (``reloaded``,
``loaded``, ``unchanged``), 422 ``reload_failed`` with the reason when the new files
fail a check (the previous version serves on), 404 when no loaded model and no folder
has that name, 503 while the models are not loaded yet. Like every POST it needs the
API key when SEQSERVE_API_KEY is set (app/middleware.py ApiKeyMiddleware, before the
body is read; the dependency below states it for the route as well).

Left out of the OpenAPI document, like the web page's own routes: it is an operator's
tool (the README documents it), not part of the API that clients are generated from.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.context import note_request, printable
from app.errors import ApiError
from app.reload import reload_models
from app.state import AppState, get_state

router = APIRouter(tags=["operations"])


@router.post("/v1/models/{model_id}/reload", include_in_schema=False)
async def reload_model(model_id: str, state: AppState = Depends(get_state)) -> dict:
    note_request(model=printable(model_id, 80))  # for the request's completion log line
    if state.registry is None or not state.ready:
        raise ApiError(503, "not_ready", "the models are not loaded yet (or the server is "
                       "stopping)", headers={"Retry-After": "1"})
    try:
        (outcome,) = await reload_models(state, only=model_id)
    except KeyError:
        raise ApiError(404, "model_not_found", f"model: no loaded model and no folder named "
                       f"{printable(repr(model_id), 80)}") from None
    if outcome.result == "failed":
        raise ApiError(422, "reload_failed", f"reload of {outcome.model!r} failed; version "
                       f"{outcome.version} serves on: {outcome.error}",
                       details=[outcome.as_dict()])
    return outcome.as_dict()
