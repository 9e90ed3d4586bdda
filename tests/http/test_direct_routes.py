"""Routes the request layer calls itself (app/http/policy.py ``direct_endpoint``,
app/http/layer.py ``_route``): which routes qualify, and that their answers, errors and
records are what FastAPI's own path gives."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from app.config import Settings
from app.http.errors import ApiError
from app.http.layer import RequestLayer, exception_handler
from app.http.policy import NATIVE, Auth, Policy, PolicyMap, direct_endpoint
from app.main import ROUTES

router = APIRouter()


@router.post("/plain")
async def plain(request: Request) -> JSONResponse:
    return JSONResponse({"route": request.scope["route"].path, "body": await request.json()})


@router.post("/fails")
async def fails(request: Request) -> JSONResponse:
    raise ApiError(409, "conflict", "no")


@router.post("/not-a-response")
async def not_a_response(request: Request) -> dict:
    return {"ok": True}


@router.get("/query")
async def query(request: Request, n: int = 1) -> JSONResponse:
    return JSONResponse({"n": n})


@router.get("/dep")
async def dep(request: Request, x: str = Depends(lambda: "d")) -> JSONResponse:
    return JSONResponse({"x": x})


@router.get("/sync")
def sync(request: Request) -> JSONResponse:
    return JSONResponse({})


def by_path(r: APIRouter) -> dict:
    return {route.path: route for route in r.routes}


def test_only_request_only_coroutines_are_called_directly():
    routes = by_path(router)
    assert direct_endpoint(routes["/plain"]) is plain
    for path in ("/query", "/dep", "/sync"):
        assert direct_endpoint(routes[path]) is None, path
    # the native inference routes qualify; OpenAI's (a pydantic body parameter and
    # a dependency) go through FastAPI
    served = {r.path: r for rt, _ in ROUTES for r in rt.routes if hasattr(r, "methods")}
    for path in ("/sentiment", "/attention", "/generate", "/generate/stream"):
        assert direct_endpoint(served[path]) is not None, path
    assert direct_endpoint(served["/v1/completions"]) is None


def test_the_handler_lookup_follows_starlettes_order():
    class Sub(ApiError):
        pass

    async def h_api(request, exc):  # pragma: no cover - looked up, not called
        ...

    async def h_404(request, exc):  # pragma: no cover
        ...

    handlers = {ApiError: h_api, 404: h_404, Exception: h_api}
    assert exception_handler(handlers, Sub(400, "x", "y")) is h_api
    assert exception_handler(handlers, HTTPException(404)) is h_404
    assert exception_handler(handlers, HTTPException(405)) is None
    assert exception_handler(handlers, KeyError("x")) is None  # Exception: not looked up
    assert exception_handler({RequestValidationError: h_api}, ValueError()) is None


def test_a_direct_route_answers_as_fastapi_would():
    app = FastAPI()
    from app.http.errors import install_error_handlers
    install_error_handlers(app)
    app.include_router(router)
    policies = PolicyMap(router.routes, lambda r: Policy(NATIVE, Auth.PUBLIC))
    app.add_middleware(RequestLayer, settings=Settings(), policies=policies)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/plain", json={"a": 1})
        assert r.status_code == 200 and r.json() == {"route": "/plain", "body": {"a": 1}}
        assert r.headers["x-request-id"]
        r = c.post("/fails", json={})
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        # a bug (an endpoint that returns no Response) is a 500 with an error id
        r = c.post("/not-a-response", json={})
        assert r.status_code == 500 and r.json()["error"]["error_id"]
        assert c.get("/query?n=3").json() == {"n": 3}  # through FastAPI
        assert c.get("/plain").status_code == 405
