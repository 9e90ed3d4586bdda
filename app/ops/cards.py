"""What the service tells about a loaded model: its card in the model listing (GET
/v1/models, in OpenAI's list shape) and the routes that serve it. Shared by the
operations routes and the protocols (an OpenAI request for a model of another task is
told where that model is served)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from seqcore.tasks import LoadedModel
from seqcore.tasks.classification import SentimentModel
from seqcore.tasks.generation import CharModel

OWNER = "seqserve"


def endpoints(m: LoadedModel) -> list[str]:
    """The routes that serve ``m`` (its ``endpoints`` in GET /v1/models)."""
    v2 = f"/v2/models/{m.name}/infer"
    if m.task == CharModel.task:
        return ["/v1/completions", "/v1/chat/completions", "/generate", "/generate/stream", v2]
    if m.task == SentimentModel.task:
        return ["/sentiment", "/attention", v2]
    return [v2]


def model_card(m: LoadedModel) -> dict[str, Any]:
    """A model as OpenAI lists models, with everything /v1/models always showed, and
    the routes that serve it."""
    d = m.describe()
    try:
        created = int(datetime.fromisoformat(str(d.get("created_at"))).timestamp())
    except ValueError:
        created = 0
    return {"id": m.name, "object": "model", "created": created, "owned_by": OWNER, **d,
            "endpoints": endpoints(m)}
