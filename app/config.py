"""Service settings: environment variables with the ``SEQSERVE_`` prefix, or a ``.env``
file in the working directory (the environment wins).

Every setting and its default is listed in the README ("Configuration"); this class
is the one source of truth and the README table is checked against it by a test.
``allowed(name)`` says in words what a setting accepts, for the one-line error of
``python -m app`` (app/__main__.py) and its ``--help``.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_ORIGIN = re.compile(r"^(\*|https?://[^\s/,]+)$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore",
                                      protected_namespaces=(), env_file=".env",
                                      env_file_encoding="utf-8")

    # where and how models run
    models_dir: Path = Field(Path("models"), description="folder scanned for model folders")
    default_models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="the model a request that names none gets, per "
        "task: task=name pairs as a comma list (text-classification=sentiment,"
        "text-generation=chargen) or a JSON object; a task not named gets its bundled "
        "model (sentiment, chargen) when loaded, else the first folder by name (logged)")
    device: Device = Field(Device.auto, description="auto | cpu | cuda")
    intra_op_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads per model")
    parallel_calls: int = Field(0, ge=0, le=64, description="ORT calls a model runs side by "
                                "side (classifier batches, parts of a large generation prefill); "
                                "0 = CPUs / (intra_op_threads x workers), max 8")
    allow_spinning: bool = Field(False, description="let ORT worker threads spin-wait")
    split_lone_calls: bool = Field(True, description="on the CPU, with parallel_calls >= 2: a "
                                   "classifier call with nothing else running or waiting "
                                   "runs its two recurrent directions side by side, and a "
                                   "generation call too small to cut in parts runs on two "
                                   "intra-op threads (same answers)")
    warmup: bool = Field(True, description="run each model once before reporting ready")

    # classification batching (/sentiment, /attention)
    batching: bool = Field(True, description="gather concurrent requests into one ORT call")
    max_batch_size: int = Field(32, ge=1, le=1024, description="rows per ORT call")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long a batch waits to fill")
    max_queue: int = Field(512, ge=1, le=1_000_000, description="queued rows before 503")
    queue_timeout_s: float = Field(10.0, gt=0, le=3600, description="queue wait deadline (then 503)")

    # generation (/generate)
    gen_batching: bool = Field(True, description="one ORT step call for all active streams")
    gen_max_streams: int = Field(64, ge=1, le=1024, description="streams stepped together")
    gen_stream_interval_ms: float = Field(
        20.0, ge=0.0, le=1000.0, description="streamed text is sent at most this often per "
        "stream (the first characters at once); 0 = every character")
    gen_stream_events_per_s: float = Field(
        1000.0, ge=0.0, le=1e6, description="with many streams, their text is sent less "
        "often, so that all together get at most about this many events a second (each "
        "stream still at least every 100 ms); 0 = no such budget")
    gen_max_queue: int = Field(256, ge=1, le=100_000, description="streams waiting to start before 503")
    gen_timeout_s: float = Field(120.0, gt=0, le=3600, description="wall-clock limit of one generation")
    gen_prefill_chunk_chars: int = Field(
        256, ge=1, le=100_000, description="prompts are read in chunks of this many characters, "
        "between steps")
    gen_prefill_slice_ms: float = Field(
        40.0, gt=0, le=10_000, description="while streams run, one prefill call takes about "
        "this long at most (a running stream waits about this much per character at worst)")
    gen_prefill_max_cells: int = Field(
        4096, ge=1, le=10_000_000, description="rows x characters of one prefill call (bounds "
        "its memory)")
    gen_max_prompt_chars_in_flight: int = Field(
        524_288, ge=0, le=100_000_000, description="prompt characters queued or being read per "
        "generator before 503; 0 = no cap")
    chat_role_prefixes: bool = Field(False, description="/v1/chat/completions' template: "
                                      "`role: content` lines then `assistant: ` instead of "
                                      "the contents joined by newlines")

    # request limits
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="larger bodies get 413")
    max_text_chars: int = Field(50_000, ge=1, le=10_000_000, description="characters per text")
    max_texts: int = Field(64, ge=1, le=4096, description="texts per /sentiment batch request")
    max_prompt_chars: int = Field(8_000, ge=1, le=1_000_000, description="characters per prompt")
    max_new_chars: int = Field(2_000, ge=1, le=1_000_000, description="upper bound of max_new_chars")
    max_stop: int = Field(4, ge=0, le=64, description="stop sequences per request")
    max_stop_chars: int = Field(32, ge=1, le=1024, description="characters per stop sequence")

    # connection limits of `python -m app` (app/http/connections.py); a proxy in front adds its own
    header_timeout_s: float = Field(10.0, gt=0, le=600, description="time to send the request "
                                    "line and headers (then 408 and close)")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="time to send the body "
                                  "once the headers are in (then 408 and close)")
    write_timeout_s: float = Field(30.0, gt=0, le=3600, description="time a response may stay "
                                   "blocked on a client that does not read (then close)")
    max_header_bytes: int = Field(16_384, ge=1024, le=1_048_576, description="request line "
                                  "and headers, in bytes (then 431 and close)")
    max_connections: int = Field(0, ge=0, le=1_000_000, description="open connections per "
                                 "process; more are answered 503 and closed at once; "
                                 "0 = the open-files limit minus a reserve")

    # security and operations
    api_key: SecretStr | None = Field(None, description="if set, Bearer key for inference routes")
    admin_key: SecretStr | None = Field(None, description="if set, Bearer key for "
                                        "POST /v1/models/{name}/reload (instead of api_key); "
                                        "with neither set, reload answers loopback clients only")
    protect_ops: bool = Field(False, description="with api_key: /metrics, /v1/models, /v2 "
                              "metadata and the docs need the key too (probes stay open)")
    # NoDecode: the raw string reaches the validator below, which takes a comma list
    # as well as a JSON list
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="allowed CORS origins: a comma list "
        "(https://a.example,https://b.example) or a JSON list")
    shutdown_grace_s: float = Field(20.0, ge=0, le=3600, description="time to finish in-flight work")
    log_level: LogLevel = Field("info", description="debug | info | warning | error | critical")
    log_format: Literal["text", "json"] = Field("text", description="text | json (one JSON "
                                                "object per line, uvicorn's lines included)")
    otel: bool = Field(False, description="OpenTelemetry tracing (needs the otel extra; "
                       "exporter from the standard OTEL_* variables)")
    host: str = Field("127.0.0.1", description="bind address of `python -m app`")
    port: int = Field(8000, ge=1, le=65535, description="port of `python -m app`")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = _json_or_items(v, "[", "list")
        if isinstance(v, list):
            for o in v:
                if not isinstance(o, str) or not _ORIGIN.match(o.rstrip("/")):
                    raise ValueError(f"{o!r} is not an origin (scheme://host[:port], or *)")
            return [o.rstrip("/") for o in v]
        return v

    @field_validator("default_models", mode="before")
    @classmethod
    def _defaults(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = _json_or_items(v, "{", "object")
            if isinstance(v, list):
                pairs = v
                bad = [p for p in pairs if p.count("=") != 1]
                if bad:
                    raise ValueError(f"{bad[0]!r} is not task=name")
                v = [tuple(x.strip() for x in p.split("=")) for p in pairs]
                tasks = [t for t, _ in v]
                if len(set(tasks)) != len(tasks):
                    raise ValueError("a task is named twice")
                v = dict(v)
        if isinstance(v, dict):
            empty = [f"{t}={n}" for t, n in v.items()
                     if not (isinstance(t, str) and t.strip() and isinstance(n, str) and n.strip())]
            if empty:
                raise ValueError(f"{empty[0]!r} is not task=name")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("empty or contains blanks")
        return v


def _json_or_items(v: str, opener: str, what: str) -> Any:
    """A setting written as JSON (when it starts with ``opener``) or as a comma list: the
    decoded JSON, or the list's non-empty items, stripped."""
    v = v.strip()
    if not v.startswith(opener):
        return [p.strip() for p in v.split(",") if p.strip()]
    try:
        return json.loads(v)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a valid JSON {what} ({e.msg})") from None


def _number(x: float) -> str:
    return f"{x:,}".replace(",", "_") if isinstance(x, int) and abs(x) >= 10_000 else str(x)


def allowed(name: str) -> str:
    """What setting ``name`` accepts, in words (derived from its type and bounds)."""
    f = Settings.model_fields[name]
    ann = f.annotation
    if name == "cors_origins":
        return "origins (scheme://host[:port] or *) as a comma list or a JSON list"
    if name == "default_models":
        return ("task=model pairs as a comma list (text-classification=sentiment,"
                "text-generation=chargen) or a JSON object")
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(map(str, get_args(ann)))
    if isinstance(ann, type) and issubclass(ann, StrEnum):
        return "one of " + ", ".join(m.value for m in ann)
    if ann is bool:
        return "true or false (also 1/0, yes/no, on/off)"
    lo = hi = None
    lo_strict = False
    for m in f.metadata:
        if isinstance(m, Ge):
            lo = m.ge
        elif isinstance(m, Gt):
            lo, lo_strict = m.gt, True
        elif isinstance(m, Le):
            hi = m.le
    kind = {int: "an integer", float: "a number"}.get(ann)  # type: ignore[call-overload]
    if kind is not None:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_strict else '>='} {_number(lo)}")
        if hi is not None:
            parts.append(f"<= {_number(hi)}")
        return kind + (" " + " and ".join(parts) if parts else "")
    if ann is Path:
        return "a folder path"
    return "a string without blanks" if name == "host" else "any string"
