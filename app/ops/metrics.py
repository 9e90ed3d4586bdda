"""Prometheus metrics, prefixed ``seqserve_``, units in the names.

Works with several uvicorn workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``python
-m app`` sets it for ``SEQSERVE_WORKERS > 1``) every worker writes its samples there and
``/metrics`` aggregates them with ``MultiProcessCollector``. The environment variable
must be set before prometheus_client is imported, which ``app/__main__.py`` ensures.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUEST_DURATION = Histogram(
    "seqserve_request_duration_seconds",
    "Time from the request's arrival to the end of its response, queue wait included",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS)
REQUESTS = Counter("seqserve_requests_total", "Requests answered",
                   ["route", "method", "status"])
IN_FLIGHT = Gauge("seqserve_requests_in_flight", "Requests being processed",
                  multiprocess_mode="livesum")
INFERENCE = Histogram("seqserve_inference_duration_seconds",
                      "Duration of one ONNX Runtime call", ["model", "kind"],
                      buckets=FAST_BUCKETS)
QUEUE_WAIT = Histogram("seqserve_queue_wait_seconds",
                       "Time a request waited before its model call started", ["model"],
                       buckets=FAST_BUCKETS)
BATCH_SIZE = Histogram("seqserve_batch_size", "Rows in one ONNX Runtime call",
                       ["model", "kind"], buckets=BATCH_BUCKETS)
PADDING = Counter("seqserve_padding_tokens_total",
                  "Padded minus real tokens fed to the model (padding waste)", ["model"])
REAL_TOKENS = Counter("seqserve_real_tokens_total", "Real tokens fed to the model", ["model"])
SPLIT_CALLS = Counter("seqserve_split_calls_total",
                      "Lone classifier calls (nothing else running or waiting) whose two "
                      "recurrent directions ran side by side on two cores", ["model"])
TTFC = Histogram("seqserve_time_to_first_char_seconds",
                 "Time from a /generate request's arrival to its first character", ["model"],
                 buckets=LATENCY_BUCKETS)
TIME_PER_CHAR = Histogram("seqserve_time_per_char_seconds",
                          "Mean time between consecutive characters, one observation per finished stream",
                          ["model"], buckets=FAST_BUCKETS)
GENERATED_CHARS = Counter("seqserve_generated_chars_total", "Characters generated", ["model"])
ACTIVE_STREAMS = Gauge("seqserve_active_streams", "Generation streams being stepped",
                       ["model"], multiprocess_mode="livesum")
REJECTED = Counter("seqserve_rejected_requests_total",
                   "Requests refused, by reason (queue_full, queue_timeout, body_too_large, "
                   "unsupported_media_type, unauthorized, shutting_down)", ["reason"])
MODEL_INFO = Gauge("seqserve_model_info",
                   "Loaded models: version, task and execution provider (value 1)",
                   ["model", "version", "task", "provider"], multiprocess_mode="max")
LOOP_UP = Gauge("seqserve_loop_up",
                "1 while a model's batching or generation thread runs; 0 once it has died "
                "(the replica must restart: /readyz is 503 too)", ["model", "loop"],
                multiprocess_mode="min")
LOOP_ERRORS = Counter("seqserve_loop_errors_total",
                      "Iterations of a batching or generation loop that failed outside the "
                      "model call (their requests got a 500; the loop went on)",
                      ["model", "loop"])
MODEL_RELOADS = Counter("seqserve_model_reloads_total",
                        "Reloads of a model folder (SIGHUP, POST /v1/models/{name}/reload), by "
                        "result: reloaded (a new version serves), loaded (a new model), "
                        "unchanged, failed (the previous version serves on)", ["model", "result"])
MODEL_RELOAD_FAILED = Gauge("seqserve_model_reload_failed",
                            "1 while the last reload of a model's folder has failed (the "
                            "previous version serves on; /v1/models says why)", ["model"],
                            multiprocess_mode="max")
READY = Gauge("seqserve_ready", "1 when every model is loaded and warmed up",
              multiprocess_mode="min")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class BulkHistogram:
    """Observations of one histogram child held here and handed to it by ``flush``,
    through prometheus_client's public ``observe``: the generation engine observes two
    histograms per step, and keeps them out of its step loop by flushing at its tally
    points (and when streams leave). The same counts, sum and buckets as observing one
    by one (tested). With ``bulk=False`` every observation goes straight to the child."""

    def __init__(self, child, bulk: bool = True) -> None:  # noqa: ANN001 (a Histogram child)
        self.child = child
        self.bulk = bulk
        self.held: list[float] = []

    def observe(self, amount: float) -> None:
        if self.bulk:
            self.held.append(amount)
        else:
            self.child.observe(amount)

    def flush(self) -> None:
        held, self.held = self.held, []
        observe = self.child.observe
        for amount in held:
            observe(amount)
