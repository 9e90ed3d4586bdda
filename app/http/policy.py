"""What a route declares about itself: the protocol it speaks (which decides the shape
of its error bodies) and its auth class. ``app.main.ROUTES`` gives every router one
``Policy``; ``PolicyMap`` turns that table into a lookup that the request layer
(app/http/layer.py) runs once per request, and the OpenAPI document reads the same
table to mark the operations that need the key.

No path pattern appears here: a request's policy is the policy of the route that
Starlette's own matching picks for it. A request that matches no route gets
``UNMATCHED``: native errors, and the ``OPS`` auth class (a read is open unless
SEQSERVE_PROTECT_OPS; anything else wants the key), so a path that is no route tells
a caller without the key no more than a route would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope


class Auth(Enum):
    """Who may call a route, when SEQSERVE_API_KEY is set."""

    API_KEY = "api_key"  # inference: always the key
    OPS = "ops"  # reads of operations data: the key with SEQSERVE_PROTECT_OPS; writes always
    ADMIN = "admin"  # the route checks the admin key itself (require_admin)
    PUBLIC = "public"  # probes, the page's own files: never a key


# An error in this API's one shape (``{"error": {...}}``, app/http/errors.py error_body) and
# its status -> the status and body a protocol's clients expect.
Shape = Callable[[int, dict[str, Any]], tuple[int, dict[str, Any]]]


def native_shape(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return status, body


@dataclass(frozen=True)
class Protocol:
    name: str
    shape: Shape = native_shape
    validation_status: int = 422  # what a request failing its schema gets (OpenAI: 400)


NATIVE = Protocol("native")
OPS = Protocol("ops")
WEB = Protocol("web")


@dataclass(frozen=True)
class Policy:
    protocol: Protocol
    auth: Auth
    # body media types besides application/json ("" = no Content-Type at all)
    media_types: frozenset[bytes] = field(default_factory=frozenset)

    def needs_key(self, method: str, protect_ops: bool, admin_key_set: bool) -> bool:
        """Whether a request must carry the API key (when one is configured)."""
        if method == "OPTIONS" or self.auth is Auth.PUBLIC:
            return False  # (a CORS preflight carries no credentials)
        if self.auth is Auth.ADMIN:
            return not admin_key_set  # the route checks the admin key itself
        if self.auth is Auth.OPS:
            return protect_ops or method not in ("GET", "HEAD")
        return True


UNMATCHED = Policy(NATIVE, Auth.OPS)

# the policy of the request under way (the error builders read its protocol)
policy_var: ContextVar[Policy] = ContextVar("seqserve_policy", default=UNMATCHED)


def current_protocol() -> Protocol:
    return policy_var.get().protocol


@dataclass(frozen=True)
class Resolved:
    policy: Policy
    template: str | None  # the route's path template (the metrics' label); None: no route
    # the route matched in path and method, when the request layer may call its
    # endpoint itself (``direct_endpoint``); None: the request goes through FastAPI
    route: Any = None


def direct_endpoint(route: BaseRoute) -> Callable | None:
    """The endpoint of a route that needs nothing of FastAPI's per-request machinery:
    an ``APIRoute`` whose endpoint is a coroutine function taking the ``Request`` alone,
    with no dependencies and no parameters to extract (every route of this service
    reads its body through ``parse_body`` and returns a ``Response``). The request layer
    calls such an endpoint itself, after its route was found once: FastAPI's router
    would match the path again through every included router, and its request handler
    would look for dependencies and parameters that are not there (about 90 µs of a
    short /sentiment request's ~950 µs of CPU, docs/benchmarks.md). None: any other
    route, which FastAPI serves as usual."""
    if not isinstance(route, APIRoute) or route.dependencies:
        return None
    d = route.dependant
    if (d.dependencies or d.path_params or d.query_params or d.header_params
            or d.cookie_params or d.body_params or d.request_param_name is None
            or d.response_param_name or d.background_tasks_param_name
            or d.http_connection_param_name or d.websocket_param_name
            or d.security_scopes_param_name):
        return None
    if (not inspect.iscoroutinefunction(route.endpoint)
            or len(inspect.signature(route.endpoint).parameters) != 1):
        return None
    return route.endpoint


_NONE = Resolved(UNMATCHED, None)


def route_path(scope: Scope) -> str:
    """The path routes are matched against: the request's path less the ``root_path``
    it is mounted under (behind a proxy that strips a prefix), as Starlette does."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root):]
    return path


class PolicyMap:
    """The route of a request, found once as Starlette finds it (the first route that
    matches path and method, else the first that matches the path only: a 405), and
    the policy its router declared.

    Most requests are for a path without parameters (/sentiment): for those paths the
    answer for each common method is worked out at start-up, with the routes' own
    ``matches`` (any parameterised route that also matches the path included, in
    matching order), and a request costs two dict lookups. Other paths and methods try
    every route in order, as Starlette does."""

    METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def __init__(self, routes: Iterable[BaseRoute], policy_of: Callable[[BaseRoute], Policy]):
        # a route standing for "no route" (OpenAI's 404 under /v1/) counts as unmatched
        self.routes = [(r, Resolved(policy_of(r), None if getattr(r, "unmatched", False)
                                    else getattr(r, "path", None))) for r in routes]
        # what a full match (path and method) resolves to: with the route, where the
        # request layer may call its endpoint itself
        self._full = {id(r): replace(res, route=r) if direct_endpoint(r) else res
                      for r, res in self.routes}
        self.by_path: dict[str, dict[str, Resolved]] = {}
        for r, _ in self.routes:
            path = getattr(r, "path", None)
            if isinstance(r, Route) and not r.param_convertors and path not in self.by_path:
                self.by_path[path] = {m: self._scan({"type": "http", "path": path,
                                                     "root_path": "", "method": m})
                                      for m in self.METHODS}

    def resolve(self, scope: Scope) -> Resolved:
        known = self.by_path.get(route_path(scope))
        if known is not None:
            resolved = known.get(scope["method"])
            if resolved is not None:
                return resolved
        return self._scan(scope)

    def _scan(self, scope: Scope) -> Resolved:
        partial = None
        path = route_path(scope)
        for route, resolved in self.routes:
            # a route's own pattern first: most routes are ruled out by one regex match,
            # without the cost of ``matches`` (which builds the route's child scope)
            pattern = getattr(route, "path_regex", None)
            if pattern is not None and pattern.match(path) is None:
                continue
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return self._full[id(route)]
            if match is Match.PARTIAL and partial is None:
                partial = resolved
        return partial or _NONE
