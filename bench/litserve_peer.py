"""The LitServe peer of the benchmark: the same ONNX models with the same tokenizers,
served by LitServe (pinned 0.2.19) instead of this service.

Runs in its own virtual environment (``make bench`` creates
``.cache/bench/litserve-venv``: litserve, onnxruntime, numpy, pinned), with the
repository on PYTHONPATH for ``seqcore`` (numpy + onnxruntime
only; ``app`` is never imported):

    PYTHONPATH=. .cache/bench/litserve-venv/bin/python bench/litserve_peer.py --port 8100

- POST /sentiment {"text"} -> {"label", "score"}: seqcore's WordTokenizer in
  decode_request, ``seqcore.runtime.pad_rows`` in batch, one ORT call per batch
  (outputs "probability", "attention"); LitServe's own batching (``max_batch_size``,
  ``batch_timeout``) over ``--sentiment-workers`` worker processes.
- POST /generate {"prompt", "max_new_chars", "temperature", "seed"} -> a stream of
  JSON lines {"text", "finish_reason"}: LitServe's continuous-batching loop
  (``ls.loops.ContinuousBatchingLoop``): new requests join the running batch
  between steps (prefilled together), every step runs the char graph once for all
  active streams and samples with ``seqcore.sampling`` (the service's own sampling
  as the raw limit), and a stream's characters go out ``--chars-per-message`` per
  message (the bench sweeps it and keeps the best).

``--fast-queue`` (on by default) is LitServe's ZeroMQ transport between the API server
and the workers (``LitServer(fast_queue=True)``), its fastest; ``--no-fast-queue`` the
multiprocessing queues.

``--print-settings`` prints the settings as JSON and exits (the bench writes them into
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import litserve as ls
import numpy as np
from litserve.loops.continuous_batching_loop import Output
from litserve.utils import LitAPIStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqcore import runtime  # noqa: E402
from seqcore.modelfolder import ModelFolder  # noqa: E402
from seqcore.sampling import sample_rows  # noqa: E402
from seqcore.tokenizer import CharVocab, WordTokenizer  # noqa: E402


def settings(a: argparse.Namespace) -> dict:
    return {"litserve": ls.__version__, "accelerator": "cpu",
            "sentiment": {"workers": a.sentiment_workers, "max_batch_size": a.max_batch_size,
                          "batch_timeout_ms": a.batch_timeout_ms, "ort_threads": 1},
            "generate": {"loop": "ls.loops.ContinuousBatchingLoop", "workers": 1,
                         "max_active_streams": a.max_streams,
                         "chars_per_message": a.chars_per_message,
                         "ort_threads": 1, "sampling": "seqcore.sampling (temperature)"},
            "api_server": "1 uvicorn process", "fast_queue": a.fast_queue}


class SentimentAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        folder = ModelFolder.open(Path(self.models) / "sentiment")
        self.tok = WordTokenizer.load(folder.vocab_path)
        self.sess = runtime.session(folder.graph_path, threads=1)

    def decode_request(self, request: dict) -> list[int]:
        return self.tok.encode(request["text"], offsets=False).ids

    def batch(self, inputs: list[list[int]]):
        return runtime.pad_rows(inputs, self.tok.unk_id)

    def predict(self, batch):
        if self.max_batch_size == 1:  # LitServe calls neither batch nor unbatch: one row
            return self._run(*runtime.pad_rows([batch], self.tok.unk_id))[0]
        return self._run(*batch)

    def _run(self, ids, lens) -> list[float]:
        p, _att = self.sess.run(["probability", "attention"],
                                {"input_ids": ids, "lengths": lens})
        return [float(x) for x in p]

    def unbatch(self, output: list[float]) -> list[float]:
        return output

    def encode_response(self, p: float) -> dict:
        label = "positive" if p >= 0.5 else "negative"
        return {"label": label, "score": p if label == "positive" else 1.0 - p}

class GenerateAPI(ls.LitAPI):
    """The methods ContinuousBatchingLoop (0.2.19) calls: add_request,
    has_capacity, has_active_requests, step(prev_outputs) -> [Output], then
    encode_response / format_encoded_response on each Output."""

    def setup(self, device: str) -> None:
        folder = ModelFolder.open(Path(self.models) / "chargen")
        self.vocab = CharVocab.load(folder.vocab_path)
        st = folder.manifest["state"]
        self.L, self.H = int(st["layers"]), int(st["hidden"])
        self.sess = runtime.session(folder.graph_path, threads=1)
        self.pending: list[tuple[str, dict]] = []
        self.uids: list[str] = []  # active streams, in batch order
        self.state: dict[str, dict] = {}
        self.h = np.zeros((self.L, 0, self.H), np.float32)
        self.c = self.h.copy()
        self.logits = np.zeros((0, self.vocab.vocab_size), np.float32)
        self.chunk = int(self.chars_per_message)

    def decode_request(self, request: dict) -> dict:
        ids, _unk = self.vocab.encode(str(request.get("prompt", "")))
        return {"ids": ids or [self.vocab.unk_id],
                "max": int(request.get("max_new_chars", 200)),
                "T": float(request.get("temperature", 1.0)) or 1e-6,
                "rng": np.random.default_rng(request.get("seed")), "n": 0, "buf": []}

    def add_request(self, uid: str, request: dict) -> None:
        self.pending.append((uid, self.decode_request(request)))

    def has_capacity(self) -> bool:
        return len(self.uids) + len(self.pending) < self.max_batch_size

    def has_active_requests(self) -> bool:
        return bool(self.uids or self.pending)

    def _prefill(self) -> None:
        new, self.pending = self.pending, []
        ids, lens = runtime.pad_rows([s["ids"] for _, s in new], self.vocab.unk_id)
        h0 = np.zeros((self.L, len(new), self.H), np.float32)
        lo, hn, cn = self.sess.run(None, {"input_ids": ids, "lengths": lens,
                                          "h0": h0, "c0": h0})
        for uid, s in new:
            self.uids.append(uid)
            self.state[uid] = s
        self.logits = np.concatenate([self.logits, lo])
        self.h = np.concatenate([self.h, hn], axis=1)
        self.c = np.concatenate([self.c, cn], axis=1)

    def _one_step(self, out: list) -> None:
        streams = [self.state[u] for u in self.uids]
        T = np.array([s["T"] for s in streams])
        B = len(streams)
        nxt = sample_rows(self.logits, T, np.zeros(B, np.int64), np.ones(B),
                          np.array([s["rng"].random() for s in streams]), (self.vocab.unk_id,))
        chars = self.vocab.chars
        keep = []
        for k, (uid, s) in enumerate(zip(self.uids, streams, strict=True)):
            s["buf"].append(chars[nxt[k]])
            s["n"] += 1
            if s["n"] >= s["max"]:
                out.append(Output(uid, {"text": "".join(s["buf"]), "finish_reason": None},
                                  LitAPIStatus.OK))
                out.append(Output(uid, {"text": "", "finish_reason": "length"},
                                  LitAPIStatus.FINISH_STREAMING))
                del self.state[uid]
                continue
            if len(s["buf"]) >= self.chunk:
                out.append(Output(uid, {"text": "".join(s["buf"]), "finish_reason": None},
                                  LitAPIStatus.OK))
                s["buf"] = []
            keep.append(k)
        self.uids = [self.uids[k] for k in keep]
        if not keep:
            self.h = self.h[:, :0]
            self.c = self.c[:, :0]
            self.logits = self.logits[:0]
            return
        idx = np.array(keep)
        ids = nxt[idx].astype(np.int64)[:, None]
        self.logits, self.h, self.c = self.sess.run(
            None, {"input_ids": ids, "lengths": np.ones(len(idx), np.int64),
                   "h0": np.ascontiguousarray(self.h[:, idx]),
                   "c0": np.ascontiguousarray(self.c[:, idx])})

    def step(self, prev_outputs) -> list:
        # An empty answer makes the loop sleep 10 ms, so step until a message is due
        # (at most ``chunk`` graph steps; waiting requests join at the next call).
        out: list = []
        if self.pending:
            self._prefill()
        while not out and self.uids:
            self._one_step(out)
        return out

    def encode_response(self, output: dict) -> dict:
        return output


def build(a: argparse.Namespace) -> ls.LitServer:
    sent = SentimentAPI(max_batch_size=a.max_batch_size, batch_timeout=a.batch_timeout_ms / 1e3,
                        api_path="/sentiment")
    gen = GenerateAPI(max_batch_size=a.max_streams, api_path="/generate", stream=True,
                      loop=ls.loops.ContinuousBatchingLoop())
    sent.models = gen.models = a.models
    gen.chars_per_message = a.chars_per_message
    return ls.LitServer([sent, gen], accelerator="cpu", fast_queue=a.fast_queue,
                        workers_per_device=[a.sentiment_workers, 1], timeout=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--models", default=str(ROOT / "models"))
    ap.add_argument("--sentiment-workers", type=int, default=2)
    ap.add_argument("--max-batch-size", type=int, default=4)
    ap.add_argument("--batch-timeout-ms", type=float, default=3.0)
    ap.add_argument("--max-streams", type=int, default=64)
    ap.add_argument("--chars-per-message", type=int, default=8)
    ap.add_argument("--fast-queue", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--print-settings", action="store_true")
    a = ap.parse_args(argv)
    if a.print_settings:
        print(json.dumps(settings(a)))
        return 0
    server = build(a)
    server.run(host="127.0.0.1", port=a.port, log_level="warning",
               generate_client_file=False, num_api_servers=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
