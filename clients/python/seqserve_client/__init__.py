"""A typed client for the seqserve inference service (sync: ``Client``, async:
``AsyncClient``), depending on httpx only.

Results are frozen dataclasses. ``generate_stream`` returns an iterator over the
text chunks of a Server-Sent Events stream; its ``result`` holds the finish (reason,
seed, counts) once the stream has ended. A 503 answer (the server is overloaded or
draining) is retried up to ``max_retries`` times after the ``Retry-After`` it carries,
capped at ``max_retry_wait`` seconds (exponential backoff when it carries none); a
stream is retried only before its first byte, so no text is ever repeated. Other
errors raise ``SeqserveError`` with the server's code, message and request id (read
from this API's error shape, OpenAI's, or the Open Inference Protocol's); a server
that cannot be reached raises ``SeqserveConnectionError`` and one that does not answer
in time ``SeqserveTimeout``, both ``SeqserveError`` too (status 0): no httpx exception
reaches the caller.
"""

from seqserve_client._client import AsyncClient, AsyncTextStream, Client, TextStream
from seqserve_client._types import (
    Attention,
    AttentionToken,
    Generation,
    ModelInfo,
    Probabilities,
    Sentiment,
    SeqserveConnectionError,
    SeqserveError,
    SeqserveTimeout,
)

__all__ = ["AsyncClient", "AsyncTextStream", "Attention", "AttentionToken", "Client",
           "Generation", "ModelInfo", "Probabilities", "SeqserveConnectionError",
           "SeqserveError", "SeqserveTimeout", "Sentiment", "TextStream"]
__version__ = "0.1.0"
