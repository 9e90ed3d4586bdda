"""Admin routes: ``POST /v1/models/{name}/reload``.

Reloads one model from its folder (app/engine/reload.py): 200 with the outcome (``reloaded``,
``loaded``, ``unchanged``), 422 ``reload_failed`` with the reason when the new files
fail a check (the previous version serves on), 404 when no loaded model and no folder
has that name, 503 while the models are not loaded yet.

It is an operator's action, guarded whatever the inference routes allow
(``require_admin``): the admin key when SEQSERVE_ADMIN_KEY is set, else the API key
when SEQSERVE_API_KEY is set, else only a client on this host (loopback). One reload
per model at a time: a request for a model whose reload is under way gets 429 with
Retry-After at once (each reload reads and checks the files, under the one reload
lock; 200 parallel requests must not queue 200 of them).

Left out of the OpenAPI document, like the web page's own routes: it is an operator's
tool (the README documents it), not part of the API that clients are generated from.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Depends, Request

from app.deps import NOT_READY_HEADERS, AppState, bearer_ok, get_state, model_not_found
from app.engine.reload import reload_models
from app.http.errors import ApiError
from app.ops import metrics
from app.ops.logs import note_request, printable


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def require_admin(request: Request, state: AppState = Depends(get_state)) -> None:
    """The admin key, else the API key, else a loopback client (module docstring)."""
    s = state.settings
    key = s.admin_key or s.api_key
    if key is None:
        if not _loopback(request):
            metrics.REJECTED.labels("forbidden").inc()
            raise ApiError(403, "forbidden", "reload is open to clients on this host only; "
                           "set SEQSERVE_ADMIN_KEY (or SEQSERVE_API_KEY) to allow it remotely")
        return
    if not bearer_ok(key, request.headers.get("authorization", "")):
        metrics.REJECTED.labels("unauthorized").inc()
        raise ApiError(401, "unauthorized", "missing or wrong admin key: send "
                       "'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(tags=["operations"], dependencies=[Depends(require_admin)])


@router.post("/v1/models/{model_id}/reload", include_in_schema=False)
async def reload_model(model_id: str, state: AppState = Depends(get_state)) -> dict:
    note_request(model=printable(model_id, 80))  # for the request's completion log line
    if state.registry is None or not state.ready:
        raise ApiError(503, "not_ready", "the models are not loaded yet (or the server is "
                       "stopping)", headers=NOT_READY_HEADERS)
    if model_id in state.reloading:
        metrics.REJECTED.labels("reload_busy").inc()
        raise ApiError(429, "reload_in_progress", f"a reload of {printable(repr(model_id), 80)} "
                       "is under way; retry shortly", headers={"Retry-After": "1"})
    state.reloading.add(model_id)
    try:
        (outcome,) = await reload_models(state, only=model_id)
    except KeyError:
        raise model_not_found(state, None, model_id) from None  # (and no folder of that name)
    finally:
        state.reloading.discard(model_id)
    if outcome.result == "failed":
        raise ApiError(422, "reload_failed", f"reload of {outcome.model!r} failed; version "
                       f"{outcome.version} serves on: {outcome.error}",
                       details=[outcome.as_dict()])
    return outcome.as_dict()
