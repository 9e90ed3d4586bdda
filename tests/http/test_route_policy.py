"""Routes declare their policy (app.main.ROUTES): the request layer reads the protocol and
auth class of the route a request matched, and nothing else decides them."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI

from app.config import Settings
from app.http.policy import NATIVE, UNMATCHED, Auth, Policy, PolicyMap
from app.main import ROUTES, create_app, include_routes


def _policies(app: FastAPI) -> PolicyMap:
    layer = next(m for m in app.user_middleware if m.cls.__name__ == "RequestLayer")
    return layer.kwargs["policies"]


def _resolve(policies: PolicyMap, method: str, path: str):  # noqa: ANN202
    return policies.resolve({"type": "http", "path": path, "method": method, "root_path": ""})


@pytest.mark.parametrize("method, path, template, protocol, auth", [
    ("POST", "/sentiment", "/sentiment", "native", Auth.API_KEY),
    ("GET", "/sentiment", "/sentiment", "native", Auth.API_KEY),  # a 405, of that route
    ("GET", "/healthz", "/healthz", "ops", Auth.PUBLIC),
    ("GET", "/metrics", "/metrics", "ops", Auth.OPS),
    ("GET", "/v1/models/x", "/v1/models/{model_id}", "openai", Auth.OPS),
    ("POST", "/v1/models/x/reload", "/v1/models/{model_id}/reload", "openai", Auth.ADMIN),
    ("GET", "/v1/completions", "/v1/completions", "openai", Auth.API_KEY),
    ("POST", "/v1/embeddings", None, "openai", Auth.OPS),  # no route, in OpenAI's shape
    ("GET", "/v2/models/m/ready", "/v2/models/{model_name}/ready", "v2", Auth.PUBLIC),
    ("GET", "/v2/models/m", "/v2/models/{model_name}", "v2", Auth.OPS),
    ("POST", "/v2/models/m/infer", "/v2/models/{model_name}/infer", "v2", Auth.API_KEY),
    ("GET", "/v2/nothing", None, "native", Auth.OPS),
    ("GET", "/openapi.json", "/openapi.json", "ops", Auth.OPS),
    ("GET", "/docs", "/docs", "web", Auth.OPS),
    ("GET", "/static/app.js", "/static/{path:path}", "web", Auth.PUBLIC),
])
def test_a_request_gets_the_policy_its_route_declares(method, path, template, protocol, auth):
    resolved = _resolve(_policies(create_app(Settings())), method, path)
    assert resolved.template == template
    assert (resolved.policy.protocol.name, resolved.policy.auth) == (protocol, auth)


def test_a_path_under_a_root_path_gets_the_policy_of_its_route():
    policies = _policies(create_app(Settings()))
    for path in ("/sentiment", "/v2/models/m/infer"):
        scope = {"type": "http", "path": "/api" + path, "method": "POST", "root_path": "/api"}
        assert policies.resolve(scope) is _resolve(policies, "POST", path)


def test_the_start_up_table_agrees_with_matching_every_route_in_order():
    policies = _policies(create_app(Settings()))
    assert len(policies.by_path) >= 15
    for path, by_method in policies.by_path.items():
        for method, resolved in by_method.items():
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            assert policies._scan(scope) is resolved, (method, path)


def test_every_declared_router_is_served_and_a_route_outside_the_table_stops_the_start_up():
    app = create_app(Settings())
    declared = {id(r) for router, _ in ROUTES for r in router.routes}
    served = {id(r) for r, _ in _policies(app).routes}
    assert declared <= served
    stray = FastAPI(docs_url=None, redoc_url=None)

    @stray.get("/stray")
    async def stray_route() -> dict:
        return {}

    with pytest.raises(RuntimeError, match="/stray"):
        include_routes(stray)


def test_a_router_included_outside_the_table_is_refused():
    app = FastAPI(docs_url=None, redoc_url=None)
    app.include_router(APIRouter())  # included outside ROUTES
    with pytest.raises(RuntimeError, match="app.main.ROUTES"):
        include_routes(app)


@pytest.mark.parametrize("auth, method, protect_ops, admin_key, needs", [
    (Auth.API_KEY, "POST", False, False, True),
    (Auth.API_KEY, "GET", False, False, True),
    (Auth.API_KEY, "OPTIONS", False, False, False),  # CORS preflights carry no key
    (Auth.OPS, "GET", False, False, False),
    (Auth.OPS, "GET", True, False, True),
    (Auth.OPS, "POST", False, False, True),
    (Auth.PUBLIC, "GET", True, False, False),
    (Auth.ADMIN, "POST", False, False, True),  # no admin key: the API key
    (Auth.ADMIN, "POST", False, True, False),  # the route checks the admin key
])
def test_auth_classes(auth, method, protect_ops, admin_key, needs):
    assert Policy(NATIVE, auth).needs_key(method, protect_ops, admin_key) is needs


def test_unmatched_requests_are_native_and_want_the_key_for_writes():
    assert UNMATCHED.protocol is NATIVE
    assert UNMATCHED.needs_key("POST", False, False)
    assert not UNMATCHED.needs_key("GET", False, False)


def test_the_openapi_document_marks_the_operations_that_need_the_key_from_the_table(
        make_client, tiny_models_dir):
    doc = make_client(tiny_models_dir, api_key="k").get(
        "/openapi.json", headers={"Authorization": "Bearer k"}).json()
    paths = doc["paths"]
    assert paths["/sentiment"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/v1/completions"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths["/v1/models"]["get"]  # ops reads: open without protect_ops
    assert "422" not in paths["/v1/completions"]["post"]["responses"]  # OpenAI answers 400
    assert "422" in paths["/sentiment"]["post"]["responses"]
