"""Errors in OpenAI's shape, for the routes that declare the OpenAI protocol
(app.main.ROUTES): ``{"error": {"message", "type", "param", "code"}}``, which OpenAI's
client libraries read (``code`` is this API's code, ``param`` the field at fault). A
request that fails validation is 400 here, as OpenAI answers it (422 elsewhere in this
API), so OpenAI's clients raise ``BadRequestError``; other statuses stay (a failed
admin reload's 422 ``reload_failed`` is not a malformed request).
"""

from __future__ import annotations

from typing import Any

from app.http.policy import Protocol

_TYPES = {401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """This API's error object (the value of its ``error`` key) as OpenAI's body."""
    details = error.get("details") or []
    param = details[0].get("field") if details and isinstance(details[0], dict) else None
    typ = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": error.get("message", ""), "type": typ,
                      "param": None if param == "body" else param, "code": error.get("code")}}


def openai_shape(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    error = body["error"]
    if status == 422 and error.get("code") == "validation_error":
        status = 400
    return status, openai_error(status, error)


OPENAI = Protocol("openai", openai_shape)
