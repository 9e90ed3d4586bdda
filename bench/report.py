"""The benchmark's report (docs/benchmarks.md): issue 30's floors first (value, met
yes/no), then /sentiment and streamed /generate side by side for this service, this
service with batching off, the LitServe peer at its best (its settings and the sweep
that chose them) and the raw limits, then the details.

``results`` maps a server (``real``, ``off``, ``peer``) to its cells: ("sentiment",
input set, concurrency) -> a wrk cell, ("stream", streams) -> a streamed cell, each the
median of interleaved rounds (bench.load.median_cell). A cell with any error is shown
as invalid, never as a figure.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime as ort

from bench.inputs import SHORT_PROMPT

WHO = {"real": "this service", "peer": "LitServe, tuned", "off": "this service, batching off"}
GEN_WHO = {"real": "this service", "off": "this service, generation batching off (engine-less)",
           "peer": "LitServe ContinuousBatchingLoop, best chars per message"}
SENT_COLS = (("mix", 1), ("mix", 32), ("mix", 128), ("short", 32))
STREAMS = (1, 32, 64)
# The hand-written part of docs/benchmarks.md starts at this heading: a run keeps it.
KEPT_HEADING = "## Generation engine: decisions"


def cell(results: dict, who: str, key: tuple) -> dict | None:
    return results.get(who, {}).get(key)


def value(results: dict, who: str, key: tuple, field: str) -> float | None:
    """A valid cell's field, else None (not measured, or invalid)."""
    c = cell(results, who, key)
    return c[field] if c and c.get("valid", True) and field in c else None


def shown(results: dict, who: str, key: tuple, field: str, fmt: str = "{:,.0f}") -> str:
    c = cell(results, who, key)
    if c is None:
        return "—"
    if not c.get("valid", True):
        return f"invalid ({c.get('errors', '?')} errors)"
    return fmt.format(c[field])


def floors(raw: dict, results: dict, meta: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 30's floors as (floor, measured, met): met None where not measured."""
    rows: list[tuple[str, str, bool | None]] = []

    def ratio(name: str, num: float | None, den: float | None, floor: float,
              pct: bool = False) -> None:
        if num is None or not den:
            rows.append((name, "not measured (or an invalid cell)", None))
            return
        x = num / den
        rows.append((name, f"{x:.0%}" if pct else f"{x:.2f}x", x >= floor))

    sent = ("sentiment",)
    for inputs, label in (("mix", "the IMDB mix"), ("short", "the short review")):
        ratio(f"/sentiment >= 2.0x the tuned LitServe at c=32, {label}",
              value(results, "real", (*sent, inputs, 32), "per_s"),
              value(results, "peer", (*sent, inputs, 32), "per_s"), 2.0)
    ratio("/sentiment >= 70 % of the two-caller raw limit at c=32, the IMDB mix",
          value(results, "real", (*sent, "mix", 32), "per_s"),
          raw["mix"]["two_callers_per_s"], 0.7, pct=True)
    ratio("/sentiment >= 50 % of the two-caller raw limit at c=32, the short review",
          value(results, "real", (*sent, "short", 32), "per_s"),
          raw["short"]["two_callers_per_s"], 0.5, pct=True)
    ratio("streamed /generate at 1 stream >= the engine-less path",
          value(results, "real", ("stream", 1), "chars_per_s"),
          value(results, "off", ("stream", 1), "chars_per_s"), 1.0)
    for st in (32, 64):
        ratio(f"streamed /generate at {st} streams >= 2.5x LitServe's continuous batching",
              value(results, "real", ("stream", st), "chars_per_s"),
              value(results, "peer", ("stream", st), "chars_per_s"), 2.5)
    p99 = value(results, "real", (*sent, "mix", 32), "p99_ms")
    ref = meta.get("p99_reference_ms")
    if p99 is None:
        rows.append(("/sentiment p99 at c=32 no worse than before", "not measured", None))
    elif ref is None:
        rows.append(("/sentiment p99 at c=32 no worse than before",
                     f"{p99:.1f} ms (no reference given: --p99-reference-ms)", None))
    else:
        rows.append(("/sentiment p99 at c=32 no worse than before",
                     f"{p99:.1f} ms (reference {ref:.1f} ms)", p99 <= ref))
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"onnxruntime {ort.__version__}, {platform.system()} {platform.release()}")


def header(meta: dict) -> list[str]:
    quick = (" **A `--quick` smoke run: short durations, one round, a reduced sweep; no "
             "figures to quote.**" if meta.get("quick") else "")
    return [
        "# Benchmarks", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on: {machine()}.",
        f"/sentiment load: wrk (C, one thread, {meta['wrk_seconds']:g} s per cell, bodies "
        "cycled from a file: the IMDB test-review mix, or one fixed "
        f"{meta['short_chars']}-character review); /generate: a Python (aiohttp) client, "
        "which must read the SSE streams. Loopback only; the load generator shares the "
        f"machine's cores with the server. Each cell: median of {meta['reps']} interleaved "
        "rounds (all servers up, each cell measured on each server in turn; the ones not "
        "measured are stopped with SIGSTOP, as an idle LitServe busy-polls), in two "
        "halves, every server started afresh for each and in the opposite order (the "
        "server started first can run a few per cent slow). Streamed /generate: 16 "
        "requests per round at 1 stream, 3 per stream at 32 and 64. A cell with "
        "any socket error or non-2xx answer is shown as invalid. Compare ratios within "
        f"one run only.{quick}",
        f"Whole run: {meta['minutes']:.1f} minutes.", ""]


def floors_section(raw: dict, results: dict, meta: dict) -> list[str]:
    lines = ["## Floors (issue 30)", "", "| floor | measured | met |", "|---|---:|:---:|"]
    for name, got, met in floors(raw, results, meta):
        lines.append(f"| {name} | {got} | {'—' if met is None else 'yes' if met else 'no'} |")
    ps = meta.get("peer_settings")
    lines += ["", "LitServe peer, as measured: "
              + (f"`{json.dumps(ps)}`" if ps else "not run (no LitServe venv).")
              + " Chosen by the sweep below.", ""]
    return lines


def sentiment_section(raw: dict, results: dict) -> list[str]:
    cols = " | ".join(f"{'mix' if i == 'mix' else 'short review'} c={c}" for i, c in SENT_COLS)
    lines = ["## /sentiment, req/s", "", f"| | {cols} |", "|---|" + "---:|" * len(SENT_COLS)]
    for who in ("real", "peer", "off"):
        lines.append(f"| {WHO[who]} | " + " | ".join(
            shown(results, who, ("sentiment", i, c), "per_s") for i, c in SENT_COLS) + " |")
    lines.append("| raw ORT limit, in process (two callers) | " + " | ".join(
        f"{raw[i]['two_callers_per_s']:,.0f}" for i, _ in SENT_COLS) + " |")
    for label, den in (("this service / LitServe", "peer"), ("this service / raw", "raw")):
        row = []
        for i, c in SENT_COLS:
            num = value(results, "real", ("sentiment", i, c), "per_s")
            d = (raw[i]["two_callers_per_s"] if den == "raw"
                 else value(results, "peer", ("sentiment", i, c), "per_s"))
            row.append("—" if num is None or not d
                       else f"{num / d:.0%}" if den == "raw" else f"{num / d:.2f}x")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += ["", "Latency at c=32 (wrk), p50 / p99 ms:", "",
              "| | mix | short review |", "|---|---:|---:|"]
    for who in ("real", "peer", "off"):
        lines.append(f"| {WHO[who]} | " + " | ".join(
            shown(results, who, ("sentiment", i, 32), "p50_ms", "{:.1f}") + " / "
            + shown(results, who, ("sentiment", i, 32), "p99_ms", "{:.1f}")
            for i in ("mix", "short")) + " |")
    return lines + [""]


def stream_section(raw_g: dict, results: dict, meta: dict) -> list[str]:
    lines = [f"## Streamed /generate, chars/s (200-char prompts, {meta['new_chars']} new "
             "characters, T=0.8)", "",
             "| | " + " | ".join(f"{s} stream{'s' if s > 1 else ''}" for s in STREAMS) + " |",
             "|---|" + "---:|" * len(STREAMS)]
    for who in ("real", "peer", "off"):
        lines.append(f"| {GEN_WHO[who]} | " + " | ".join(
            shown(results, who, ("stream", s), "chars_per_s") for s in STREAMS) + " |")
    raw = raw_g["chars_per_s_by_streams"]
    lines.append("| raw step + this service's sampling, in process, best layout | "
                 + " | ".join(f"{raw[s]:,.0f}" if s in raw else "—" for s in STREAMS) + " |")
    lines.append("| first character p50 ms, this service | " + " | ".join(
        shown(results, "real", ("stream", s), "first_char_p50_ms", "{:.1f}")
        for s in STREAMS) + " |")
    t = meta.get("ttfc_ms")
    if t:
        lines += ["", f"Time to first character, no other load (SSE, median): {t[200]:.1f} ms "
                  f"with a 200-char prompt, {t[SHORT_PROMPT]:.1f} ms with a {SHORT_PROMPT}-char "
                  "one; a lone prefill in process: " + ", ".join(
                      f"{v:.1f} ms ({n} chars)" for n, v in raw_g["prefill_ms"].items()) + "."]
    return lines + [""]


def sweep_section(meta: dict) -> list[str]:
    if "sweep_sentiment" not in meta:
        return ["## The LitServe peer's sweep", "", "Not run (`--no-sweep`, `--no-peer` or no "
                "LitServe venv): the peer, if any, ran with its defaults.", ""]
    lines = ["## The LitServe peer's sweep", "",
             f"`fast_queue=True` throughout. /sentiment: wrk at c={meta['sweep_concurrency']} "
             f"on the IMDB mix, {meta['sweep_seconds']:g} s per setting after a warm-up; "
             "streamed /generate: 32 streams, one request each. The best valid trial is "
             "kept (a trial with any error never is)."
             + (f" **No valid trial ({meta['sweep_failed']}): the peer ran with its defaults "
                "there.**" if meta.get("sweep_failed") else ""), "",
             "| workers | max_batch_size | batch_timeout ms | req/s | p99 ms | valid |",
             "|---:|---:|---:|---:|---:|:---:|"]
    for s, r in meta.get("sweep_sentiment", []):
        lines.append(f"| {s['sentiment_workers']} | {s['max_batch_size']} | "
                     f"{s['batch_timeout_ms']:g} | {r.get('per_s', 0):,.0f} | "
                     f"{r.get('p99_ms', float('nan')):.1f} | {'yes' if r.get('valid') else 'no'} |")
    lines += ["", "| chars per message | chars/s at 32 streams | valid |", "|---:|---:|:---:|"]
    for s, r in meta.get("sweep_stream", []):
        lines.append(f"| {s['chars_per_message']} | {r.get('chars_per_s', 0):,.0f} | "
                     f"{'yes' if r.get('valid') else 'no'} |")
    return lines + [""]


def raw_section(raw: dict) -> list[str]:
    sizes = sorted({k[2] for k in raw["mix"]["by_batch"]})
    lines = ["## Raw /sentiment limits (in process, no HTTP, length-sorted batches built "
             "beforehand), rows/s", "",
             "| input | callers x ORT threads | " + " | ".join(f"B={b}" for b in sizes) + " |",
             "|---|---|" + "---:|" * len(sizes)]
    for inputs in ("mix", "short"):
        by = raw[inputs]["by_batch"]
        for cfg in sorted({k[:2] for k in by}):
            lines.append(f"| {inputs} | {cfg[0]} x {cfg[1]} | " + " | ".join(
                f"{by[(*cfg, b)]:,.0f}" for b in sizes) + " |")
    return lines + [""]


def service_section(results: dict, meta: dict) -> list[str]:
    s = meta.get("servers", {})
    lines = ["## Service", ""]
    for who, m in s.items():
        lines.append(f"- {WHO.get(who, who)}: start-up to ready {m['startup_s']:.2f} s; "
                     f"resident memory {m['rss_start_mb']:.0f} MB after start-up, "
                     f"{m.get('rss_end_mb', float('nan')):.0f} MB after the run.")
    bad = [f"{who} {key}" for who, cells in results.items() for key, c in cells.items()
           if not c.get("valid", True)]
    lines.append("- Invalid cells (any error): " + (", ".join(bad) if bad else "none") + ".")
    return lines + [""]


def clients_section(meta: dict) -> list[str]:
    """aiperf's and guidellm's own figures (bench/clients.py), when they ran."""
    clients = meta.get("clients")
    if not clients:
        return []

    def ms(x: float | None) -> str:
        return "—" if x is None else f"{x:.1f}"

    lines = ["## Benchmark clients: aiperf and guidellm, 32 concurrent streamed requests", "",
             "Their own measurements, the tools run unchanged from their venvs with the "
             "character tokenizer of the model (one token = one character).", "",
             "| client | endpoint | requests | errors | TTFT p50 / p99 ms "
             "| inter-token p50 / p99 ms | inter-chunk p50 / p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in clients:
        if "skipped" in c or "failed" in c:
            lines.append(f"| {c['tool']} | {c.get('skipped') or 'failed: ' + c['failed']} "
                         "| | | | | |")
            continue
        lines.append(f"| {c['tool']} | {c.get('endpoint', 'default')} | {c['requests']} | "
                     f"{c['errors']} | {ms(c['ttft_ms_p50'])} / {ms(c['ttft_ms_p99'])} | "
                     f"{ms(c['itl_ms_p50'])} / {ms(c['itl_ms_p99'])} | "
                     f"{ms(c.get('icl_ms_p50'))} / {ms(c.get('icl_ms_p99'))} |")
    return lines + [""]


def render(raw: dict, raw_g: dict, results: dict, meta: dict) -> str:
    return "\n".join([*header(meta), *floors_section(raw, results, meta),
                      *sentiment_section(raw, results), *stream_section(raw_g, results, meta),
                      *sweep_section(meta), *raw_section(raw), *service_section(results, meta),
                      *clients_section(meta)])


def kept_sections(path: Path) -> str:
    """The report's hand-written sections (from ``KEPT_HEADING`` on), to keep when the
    generated part is rewritten; "" when there are none."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    at = text.find("\n" + KEPT_HEADING)
    return text[at:] if at >= 0 else ""
