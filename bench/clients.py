"""The serving benchmarks that users point at OpenAI-compatible servers, run unchanged
against this service: NVIDIA's aiperf and guidellm, each from a venv of its own
(``make bench-tools``: .cache/bench/aiperf-venv, .cache/bench/guidellm-venv), with
the character tokenizer built from the served model (bench/char_tokenizer.py), so
that their token counts are the service's character counts.

``run_aiperf`` and ``run_guidellm`` run one short streamed profile each and return
what the tool measured, from its own JSON export: requests, errors, time to first
token and inter-token (inter-chunk) latency, output tokens per request. A tool that
exits 0 while its requests failed (guidellm does) is caught by the error counts,
which tests/bench/test_bench_clients.py requires to be 0; ``make bench`` prints the TTFT
and inter-chunk figures beside its own (bench/run.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import char_tokenizer

ROOT = Path(__file__).resolve().parents[1]
AIPERF = Path(os.environ.get("SEQSERVE_AIPERF",
                             ROOT / ".cache" / "bench" / "aiperf-venv" / "bin" / "aiperf"))
GUIDELLM = Path(os.environ.get("SEQSERVE_GUIDELLM",
                               ROOT / ".cache" / "bench" / "guidellm-venv" / "bin" / "guidellm"))


class ToolFailed(RuntimeError):
    """The tool exited non-zero or wrote no results."""


def _run(cmd: list[str], cwd: Path, timeout: float, check: bool = True) -> tuple[int, str]:
    # (not HF_HUB_OFFLINE: aiperf 0.13 then refuses a local tokenizer folder as a bad
    # repo id; the tokenizer is a local folder and nothing is downloaded)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if check and p.returncode != 0:
        raise ToolFailed(f"{cmd[0]} exited {p.returncode}:\n{out[-4000:]}")
    return p.returncode, out


def _stat(metric: dict | None, key: str) -> float | None:
    if not isinstance(metric, dict):
        return None
    v = metric.get(key)
    return float(v) if isinstance(v, int | float) else None


def run_aiperf(url: str, model: str, tokenizer: Path, *, endpoint: str = "chat",
               requests: int = 32, concurrency: int = 4, input_tokens: int = 100,
               output_tokens: int = 50, extra_inputs: dict[str, Any] | None = None,
               out_dir: Path | None = None, timeout: float = 600) -> dict[str, Any]:
    """One streamed aiperf profile (``endpoint``: ``chat``, aiperf's default, or
    ``completions``) of ``requests`` requests at ``concurrency``."""
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="aiperf-"))
    tokenizer = Path(tokenizer).resolve()  # the tool runs in out_dir
    cmd = [str(AIPERF), "profile", "--model", model, "--url", url,
           "--endpoint-type", endpoint, "--streaming", "--tokenizer", str(tokenizer),
           "--request-count", str(requests), "--concurrency", str(concurrency),
           "--synthetic-input-tokens-mean", str(input_tokens),
           "--synthetic-input-tokens-stddev", "0",
           "--output-tokens-mean", str(output_tokens), "--output-tokens-stddev", "0",
           "--random-seed", "1", "--output-artifact-dir", str(out_dir), "--no-auto-plot"]
    for k, v in (extra_inputs or {}).items():
        cmd += ["--extra-inputs", f"{k}:{json.dumps(v) if not isinstance(v, str) else v}"]
    rc, log = _run(cmd, out_dir, timeout, check=False)
    # every request's record (aiperf exits 1 when all failed, 0 when only some did):
    # errors are counted here, with the server's answer
    records = []
    jsonl = out_dir / "profile_export.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            if r.get("metadata", {}).get("benchmark_phase", "profiling") == "profiling":
                records.append(r)
    failed = [r["error"] for r in records if r.get("error")]
    path = out_dir / "profile_export_aiperf.json"
    if not records or (rc != 0 and not failed):
        raise ToolFailed(f"aiperf exited {rc} with {len(records)} request records:\n"
                         f"{log[-4000:]}")
    d = json.loads(path.read_text()) if path.exists() else {}
    ttft, itl = d.get("time_to_first_token"), d.get("inter_token_latency")
    return {"tool": "aiperf", "endpoint": endpoint, "exit_code": rc,
            "requests": len(records), "errors": len(failed), "error_examples": failed[:3],
            "error_summary": d.get("error_summary") or [],
            "error_rate": _stat(d.get("request_error_rate"), "avg") or 0.0,
            "ttft_ms_p50": _stat(ttft, "p50"), "ttft_ms_p99": _stat(ttft, "p99"),
            "itl_ms_p50": _stat(itl, "p50"), "itl_ms_p99": _stat(itl, "p99"),
            "icl_ms_p50": _stat(d.get("inter_chunk_latency"), "p50"),
            "icl_ms_p99": _stat(d.get("inter_chunk_latency"), "p99"),
            "output_tokens_avg": _stat(d.get("output_sequence_length"), "avg"),
            "command": cmd, "log": log}


def run_guidellm(url: str, model: str, tokenizer: Path, *, requests: int = 32,
                 concurrency: int = 4, input_tokens: int = 100, output_tokens: int = 50,
                 out_dir: Path | None = None, timeout: float = 600) -> dict[str, Any]:
    """One guidellm run (its default backend and request type: streamed) of
    ``requests`` requests at ``concurrency`` streams, synthetic text."""
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="guidellm-"))
    tokenizer = Path(tokenizer).resolve()  # the tool runs in out_dir
    out = out_dir / "benchmarks.json"
    cmd = [str(GUIDELLM), "run", "--backend", f"kind=openai_http,target={url},model={model}",
           "--profile", f"kind=concurrent,streams={concurrency}",
           "--constraint", f"kind=max_requests,count={requests}",
           "--tokenizer", f"kind=hf_auto,model={tokenizer}",
           "--data", f"kind=synthetic_text,prompt_tokens={input_tokens},"
                     f"output_tokens={output_tokens}",
           "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    _, log = _run(cmd, out_dir, timeout)
    if not out.exists():
        raise ToolFailed(f"guidellm wrote no {out.name}:\n{log[-4000:]}")
    (bench,) = json.loads(out.read_text())["benchmarks"]
    totals = bench["metrics"]["request_totals"]
    m = bench["metrics"]

    def succ(name: str, key: str) -> float | None:
        v = (((m.get(name) or {}).get("successful") or {}).get("percentiles") or {}).get(key)
        return float(v) if isinstance(v, int | float) else None

    return {"tool": "guidellm", "requests": int(totals.get("total", 0)),
            "successful": int(totals.get("successful", 0)),
            "errors": int(totals.get("errored", 0)),
            "incomplete": int(totals.get("incomplete", 0)),
            "ttft_ms_p50": succ("time_to_first_token_ms", "p50"),
            "ttft_ms_p99": succ("time_to_first_token_ms", "p99"),
            "itl_ms_p50": succ("inter_token_latency_ms", "p50"),
            "itl_ms_p99": succ("inter_token_latency_ms", "p99"),
            "output_tokens_avg": ((m.get("output_token_count") or {}).get("successful")
                                  or {}).get("mean"),
            "command": cmd, "log": log}


def bench_clients(url: str, model_dir: Path, *, concurrency: int, requests: int,
                  input_tokens: int, output_tokens: int) -> list[dict[str, Any]]:
    """Each installed tool's default streamed run against ``url`` (``make bench``):
    one summary per tool (no log), or its failure."""
    tok = char_tokenizer.write(model_dir, ROOT / ".cache" / "bench" / "char-tokenizer")
    out: list[dict[str, Any]] = []
    for tool, path, fn in (("aiperf", AIPERF, run_aiperf), ("guidellm", GUIDELLM, run_guidellm)):
        if not path.exists():
            out.append({"tool": tool, "skipped": f"not installed ({path})"})
            continue
        try:
            r = fn(url, model_dir.name, tok, requests=requests, concurrency=concurrency,
                   input_tokens=input_tokens, output_tokens=output_tokens)
        except (ToolFailed, subprocess.TimeoutExpired) as e:
            out.append({"tool": tool, "failed": str(e)[-500:]})
            continue
        out.append({k: v for k, v in r.items() if k not in ("log", "command")})
    return out
