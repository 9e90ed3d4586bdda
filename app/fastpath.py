"""POST /sentiment without FastAPI's per-request machinery, for valid requests only.

/sentiment is the hot path of the service (one short call per text), and on a 2-core
machine FastAPI's request handling (dependency solving, body field resolution, the
exception layers) costs a good part of the CPU the model needs. This ASGI layer sits
inside the request-context, body-limit and CORS middleware, so request ids, metrics,
logging, the 413/415 checks and CORS apply unchanged. It decodes and validates the
body exactly as the FastAPI route does (``json.loads``, then ``SentimentRequest``
with the same strict config, then the same setting-dependent checks) and answers
through the same ``sentiment_answer``.

Anything it does not accept (a body that is not JSON or not schema-valid, a missing
or wrong API key) goes on, body replayed, to the FastAPI route, which answers it:
every client error is made by one code path, and the OpenAPI schema still comes
from the route. Errors raised after validation (overload, timeout, an ORT failure)
are answered with the same error responses as the route's handler.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ApiError, api_error_response
from app.middleware import replay
from app.routes.classify import arrival, sentiment_answer
from app.schemas import SentimentRequest
from app.state import AppState, api_key_ok

PATH = "/sentiment"


class SentimentFastPath:
    def __init__(self, app: ASGIApp, state: AppState):
        self.app = app
        self.state = state

    def _parse(self, scope: Scope, body: bytes) -> SentimentRequest | None:
        """The request if the route would accept it as it is, else None."""
        settings = self.state.settings
        if settings.api_key is not None:
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not api_key_ok(settings, auth.decode("latin-1")):
                return None
        try:
            return SentimentRequest.model_validate(json.loads(body))
        except Exception:  # not JSON, not an object, invalid, too deep: the route says why
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.state.fast_path or scope["type"] != "http" or scope["path"] != PATH
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client gone before its body arrived: nothing to answer
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        request = self._parse(scope, body)
        if request is None:
            await self.app(scope, replay(body, receive), send)
            return
        try:
            response = await sentiment_answer(self.state, request, arrival(scope))
        except ApiError as exc:
            response = api_error_response(scope["method"], scope["path"], exc)
        await response(scope, receive, send)
