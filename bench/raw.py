"""The raw limits, in process and without HTTP, that the servers are measured against.

- /sentiment: bare ``session.run`` over length-sorted batches built beforehand, one
  caller with 1 or 2 ORT threads and two callers side by side (1 thread each, as the
  server's two classifier workers run); the limit is the best (callers, threads, batch).
- Generation: prefill + step graph + the service's own sampling
  (``seqcore.sampling.RowSampler`` at T=0.8: ``<unk>`` banned, one uniform draw per
  stream from its own generator) at 1-64 streams, in the best layout of callers; the
  bare greedy step; the share of a step that sampling takes; a lone prefill.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.inputs import MODELS, SHORT_PROMPT, TEMPERATURE
from seqcore import runtime
from seqcore.modelfolder import ModelFolder
from seqcore.sampling import RowSampler, Uniforms
from seqcore.tokenizer import CharVocab, WordTokenizer

LAYOUTS = ((1, 1), (1, 2), (2, 1))  # (callers, ORT threads each)
BATCH_SIZES = (1, 4, 8, 16, 32)


def _batches(ids: list[list[int]], bs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [runtime.pad_rows([ids[j] for j in order[i : i + bs]], 1)
            for i in range(0, len(order), bs)]


def _side_by_side(fn: Callable, args_per_caller: list[tuple]) -> float:
    """Seconds for ``fn(*args)`` run in one thread per entry, side by side."""
    threads = [threading.Thread(target=fn, args=args) for args in args_per_caller]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def raw_sentiment(texts: list[str]) -> dict:
    """Rows/s of bare session.run for every (callers, threads, batch size) of
    ``LAYOUTS`` x ``BATCH_SIZES``; ``best_per_s`` the best of all, ``two_callers_per_s``
    the best with two callers (the limit the issue's floors divide by)."""
    folder = ModelFolder.open(MODELS / "sentiment")
    tok = WordTokenizer.load(folder.vocab_path)
    ids = [tok.encode(t).ids for t in texts]
    out: dict = {}

    def run_all(sess: ort.InferenceSession, batches: list) -> None:
        for arr, lens in batches:
            sess.run(["probability"], {"input_ids": arr, "lengths": lens})

    for callers, threads in LAYOUTS:
        sess = runtime.session(folder.graph_path, threads=threads)
        for bs in BATCH_SIZES:
            batches = _batches(ids, bs)
            run_all(sess, batches[:2])  # warm
            secs = _side_by_side(run_all, [(sess, batches[k::callers]) for k in range(callers)])
            out[(callers, threads, bs)] = len(ids) / secs
    one = {k: v for k, v in out.items() if k[0] == 1}
    two = {k: v for k, v in out.items() if k[0] == 2}
    best, best1, best2 = (max(d, key=d.__getitem__) for d in (out, one, two))
    return {"by_batch": out, "best_batch": best, "best_per_s": out[best],
            "best_one_caller": best1, "best_one_caller_per_s": out[best1],
            "two_callers": best2, "two_callers_per_s": out[best2]}


class _CharLoop:
    """Prefill + step + sampling over B streams of the char model, as the engine runs them."""

    def __init__(self, prompt_list: list[str], new_chars: int, folder_path: Path | None):
        folder = ModelFolder.open(folder_path or MODELS / "chargen")
        self.L, self.H = folder.manifest["state"]["layers"], folder.manifest["state"]["hidden"]
        self.vocab = CharVocab.load(folder.vocab_path)
        self.prompts, self.new_chars = prompt_list, new_chars
        self.narrow = runtime.session(folder.graph_path, threads=1)
        self.wide = runtime.session(folder.graph_path, threads=2)

    def generate(self, B: int, sample: bool = True, timing: list[float] | None = None,
                 sess: ort.InferenceSession | None = None) -> None:
        """B streams of ``new_chars`` characters; ``timing`` gets [sampling s, step s]."""
        sess = sess or self.narrow
        rngs = [Uniforms(k) for k in range(B)]
        sampler = RowSampler(np.full(B, TEMPERATURE), np.zeros(B, np.int64), np.ones(B),
                             (self.vocab.unk_id,), self.vocab.vocab_size)
        h = np.zeros((self.L, B, self.H), np.float32)
        c = np.zeros_like(h)
        ids = np.array([self.vocab.encode(p)[0] for p in (self.prompts * B)[:B]], np.int64)
        logits, h, c = sess.run(None, {"input_ids": ids, "lengths": np.full(B, ids.shape[1]),
                                       "h0": h, "c0": c})
        ones = np.ones(B, np.int64)
        t_sample = t_step = 0.0
        for k in range(self.new_chars):
            t0 = time.perf_counter()
            nxt = sampler(logits, [draw() for draw in rngs]) if sample else logits.argmax(1)
            t1 = time.perf_counter()
            if k == self.new_chars - 1:
                break
            logits, h, c = sess.run(None, {"input_ids": nxt[:, None].astype(np.int64),
                                           "lengths": ones, "h0": h, "c0": c})
            t_sample += t1 - t0
            t_step += time.perf_counter() - t1
        if timing is not None:
            timing[:] = [t_sample, t_step]

    def chars_per_s(self, B: int, **kw: object) -> float:
        t0 = time.perf_counter()
        self.generate(B, **kw)  # type: ignore[arg-type]
        return B * self.new_chars / (time.perf_counter() - t0)

    def prefill_ms(self, n: int, reps: int = 30) -> float:
        """Median ms of one stream's prefill of an ``n``-char prompt (faster session)."""
        ids = np.array([self.vocab.encode(self.prompts[0][:n])[0]], dtype=np.int64)
        z = np.zeros((self.L, 1, self.H), np.float32)
        feed = {"input_ids": ids, "lengths": np.array([ids.shape[1]]), "h0": z, "c0": z}
        best = []
        for sess in (self.narrow, self.wide):
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append(time.perf_counter() - t0)
            best.append(statistics.median(times) * 1e3)
        return min(best)


def raw_generation(prompt_list: list[str], new_chars: int,
                   streams: tuple[int, ...] = (1, 8, 32, 64),
                   folder_path: Path | None = None) -> dict:
    """Chars/s per stream count in three layouts (one caller on a one-thread session,
    one caller on a two-thread session, and from 32 streams two callers with half the
    streams each); ``chars_per_s_by_streams`` the best layout's. Also the bare greedy
    step and the sampling share at 1 and 32 streams, and a lone prefill (ms) of a
    ``SHORT_PROMPT``- and a 200-char prompt. ``folder_path``: another char model folder."""
    loop = _CharLoop(prompt_list, new_chars, folder_path)
    loop.generate(1)  # warm
    loop.generate(1, sess=loop.wide)
    prefill = {n: loop.prefill_ms(n) for n in (SHORT_PROMPT, 200)}
    out, out_wide, split, greedy, share = {}, {}, {}, {}, {}
    for B in streams:
        timing = [0.0, 0.0]
        out[B] = loop.chars_per_s(B, timing=timing)
        out_wide[B] = loop.chars_per_s(B, sess=loop.wide)
        if B in (1, 32):
            share[B] = timing[0] / timing[1]
            greedy[B] = loop.chars_per_s(B, sample=False)
        if B >= 32:
            split[B] = B * new_chars / _side_by_side(loop.generate, [(B // 2,), (B // 2,)])
    layouts = {"one caller": out, "one caller, 2 threads": out_wide, "two callers": split}
    best = {B: max(v.get(B, 0.0) for v in layouts.values()) for B in out}
    layout = {B: max(layouts, key=lambda k: layouts[k].get(B, 0.0)) for B in out}
    return {"one_caller": out, "one_caller_two_threads": out_wide, "two_callers": split,
            "chars_per_s_by_streams": best, "layout": layout, "greedy_one_caller": greedy,
            "sampling_share": share, "prefill_ms": prefill}
