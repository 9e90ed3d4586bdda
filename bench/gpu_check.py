"""The CUDA path, checked and measured in one go (run by bench/gpu_check.sh on a machine
with an NVIDIA GPU and onnxruntime-gpu installed; prints one JSON object).

1. **Export checks on the CUDA provider**: each shipped graph on CUDA vs on the CPU
   (same inputs, a padded batch of mixed lengths), and a row alone vs the same row in
   the padded batch on CUDA (batch invariance), with the worst absolute differences.
2. **IO binding for generation**: the char graph stepped B streams at a time (greedy,
   200 steps), (a) with plain ``session.run`` (state copied host -> device -> host every
   step) and (b) with ``IOBinding``, the LSTM state kept on the device between steps
   (only the [B, 1] ids go up and the logits come down). chars/s for each, and the
   ratio, at B = 1, 32, 256.
3. **Classifier throughput**: reviews/s of ``session.run`` at batch 1, 32, 128 (random
   lengths 50..400) on CUDA vs CPU.

Only numpy, onnxruntime and seqcore are imported.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqcore import runtime
from seqcore.modelfolder import ModelFolder

MODELS = Path(__file__).resolve().parents[1] / "models"


def _padded(lengths: list[int], vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return runtime.pad_rows([rng.integers(2, vocab, n).tolist() for n in lengths], 1)


def export_checks(folder: ModelFolder, cuda: ort.InferenceSession, cpu: ort.InferenceSession
                  ) -> dict:
    lengths = [7, 1, 23, 64, 3, 40]
    vocab = 50
    ids, lens = _padded(lengths, vocab, 0)
    feed = {"input_ids": ids, "lengths": lens}
    if folder.task == "text-generation":
        st = folder.manifest["state"]
        h = np.zeros((st["layers"], len(lengths), st["hidden"]), np.float32)
        feed.update(h0=h, c0=h.copy())
    first = cuda.get_outputs()[0].name
    on_gpu = cuda.run([first], feed)[0]
    on_cpu = cpu.run([first], feed)[0]
    worst_alone = 0.0
    for k, n in enumerate(lengths):
        one = {"input_ids": ids[k : k + 1, :n], "lengths": lens[k : k + 1]}
        if "h0" in feed:
            one.update(h0=feed["h0"][:, k : k + 1], c0=feed["c0"][:, k : k + 1])
        alone = cuda.run([first], one)[0][0]
        row = on_gpu[k]
        if row.ndim:  # attention: compare the real positions only
            alone, row = alone[: alone.shape[-1]], row[: alone.shape[-1]]
        worst_alone = max(worst_alone, float(np.max(np.abs(alone - row))))
    return {"output": first, "cuda_vs_cpu_max_abs_diff": float(np.max(np.abs(on_gpu - on_cpu))),
            "row_alone_vs_batch_max_abs_diff_cuda": worst_alone,
            "batch_invariant": worst_alone <= 1e-4}


def generation_iobinding(folder: ModelFolder, sess: ort.InferenceSession, steps: int = 200,
                         device: str = "cuda") -> dict:
    st = folder.manifest["state"]
    L, H = st["layers"], st["hidden"]
    out = {}
    for B in (1, 32, 256):
        ids = np.ones((B, 1), np.int64)
        lens = np.ones(B, np.int64)
        h = np.zeros((L, B, H), np.float32)
        # (a) plain run: the state goes through the host every step
        t0 = time.perf_counter()
        hh, cc = h, h.copy()
        for _ in range(steps):
            logits, hh, cc = sess.run(None, {"input_ids": ids, "lengths": lens, "h0": hh, "c0": cc})
            ids = logits.argmax(1)[:, None].astype(np.int64)
        plain = B * steps / (time.perf_counter() - t0)
        # (b) IO binding: two state buffers per tensor on the device, swapped each step
        ids = np.ones((B, 1), np.int64)
        dev = [[ort.OrtValue.ortvalue_from_numpy(h, device, 0) for _ in range(2)]
               for _ in range(2)]  # [h or c][ping or pong]
        lens_dev = ort.OrtValue.ortvalue_from_numpy(lens, device, 0)
        binding = sess.io_binding()
        t0 = time.perf_counter()
        for k in range(steps):
            src, dst = k % 2, (k + 1) % 2
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_ortvalue_input("lengths", lens_dev)
            binding.bind_ortvalue_input("h0", dev[0][src])
            binding.bind_ortvalue_input("c0", dev[1][src])
            binding.bind_output("logits", "cpu")
            binding.bind_ortvalue_output("hN", dev[0][dst])
            binding.bind_ortvalue_output("cN", dev[1][dst])
            sess.run_with_iobinding(binding)
            ids = binding.copy_outputs_to_cpu()[0].argmax(1)[:, None].astype(np.int64)
        bound = B * steps / (time.perf_counter() - t0)
        out[B] = {"plain_chars_per_s": round(plain), "iobinding_chars_per_s": round(bound),
                  "iobinding_gain": round(bound / plain, 2)}
    return out


def classifier_throughput(folder: ModelFolder, sessions: dict[str, ort.InferenceSession]
                          ) -> dict:
    rng = np.random.default_rng(1)
    out: dict = {}
    for name, sess in sessions.items():
        for B in (1, 32, 128):
            batches = [_padded(rng.integers(50, 400, B).tolist(), 1000, k) for k in range(20)]
            sess.run(["probability"], {"input_ids": batches[0][0], "lengths": batches[0][1]})
            t0 = time.perf_counter()
            for ids, lens in batches:
                sess.run(["probability"], {"input_ids": ids, "lengths": lens})
            out[f"{name}_B{B}_reviews_per_s"] = round(B * len(batches) / (time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    # --cpu: the same code with "CUDA" played by the CPU provider (a dry run of this
    # script on a machine without a GPU; its figures mean nothing)
    dry = "--cpu" in (sys.argv[1:] if argv is None else argv)
    gpu = [runtime.CPU] if dry else [runtime.CUDA, runtime.CPU]
    if not dry and runtime.CUDA not in ort.get_available_providers():
        print(json.dumps({"error": "this onnxruntime has no CUDAExecutionProvider",
                          "providers": ort.get_available_providers()}))
        return 1
    report: dict = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
                    "dry_run_on_cpu": dry}
    for name in ("sentiment", "chargen"):
        folder = ModelFolder.open(MODELS / name)
        cuda = runtime.session(folder.graph_path, providers=gpu)
        cpu = runtime.session(folder.graph_path)
        entry = {"active_provider": cuda.get_providers()[0],
                 "checks": export_checks(folder, cuda, cpu)}
        if folder.task == "text-generation":
            entry["generation"] = generation_iobinding(folder, cuda, 50 if dry else 200,
                                                       "cpu" if dry else "cuda")
        else:
            entry["throughput"] = classifier_throughput(folder, {"cuda": cuda, "cpu": cpu})
        report[name] = entry
    print(json.dumps(report, indent=2))
    ok = all(report[n]["checks"]["batch_invariant"] for n in ("sentiment", "chargen"))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
