"""The character generator: its stages.

- load: the graph takes ``input_ids`` [B, T], ``lengths`` [B] and the recurrent state
  ``h0``/``c0`` [layers, B, hidden] and returns the next-character ``logits`` [B, V]
  after each row's last real step, and the state there (``hN``/``cN``). GRU and
  vanilla-RNN graphs take and return a ``c`` they leave untouched, so every cell has
  the same interface (the manifest's ``state`` gives layers and hidden);
- encode: ``CharVocab.encode`` (lowercased; characters outside the vocabulary read as
  ``<unk>`` and are counted);
- run: a prefill (prompts of different lengths, ``sequence_lens``) or a step ([B, 1]);
  ``wide=True`` runs it on a second session with two intra-op threads (prepared at
  load, ``prepare_split``), for a call the generation loop makes with the other core
  idle (docs/benchmarks.md has the gains). Its answers are checked at load to equal
  the one-thread session's exactly, or it is not used;
- decode: ids -> text (``CharVocab.decode``).

The sampling of the next character lives with the generation loop that calls
``run`` every step (app/engine/generator.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from seqcore.modelfolder import ModelFolder
from seqcore.tasks import LoadedModel, ModelLoadError, check_contract, probe_batch, register
from seqcore.tokenizer import CharVocab

INPUTS = {"input_ids", "lengths", "h0", "c0"}
OUTPUTS = ["logits", "hN", "cN"]
# A run with these options gives the CPU arena's free regions back at its end: the
# generation engine asks for it on the call that ends a burst of prefills, so the
# memory a large prefill took does not stay with the process (measured: a burst of
# [16, 256] calls on the ensemble kept 62 MB without it, nothing with it)
SHRINK = ort.RunOptions()
SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
WIDE_THREADS = 2
log = logging.getLogger("seqserve.generation")


@register
@dataclass
class CharModel(LoadedModel):
    task = "text-generation"
    vocab: CharVocab | None = None
    layers: int = 0
    hidden: int = 0
    # the same graph on two intra-op threads, for calls made with the other core idle
    wide: ort.InferenceSession | None = None

    # -- load ----------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: ModelFolder, common: dict[str, Any]) -> CharModel:
        check_contract(folder, common["session"], INPUTS, OUTPUTS)
        st = folder.manifest.get("state") or {}
        try:
            layers, hidden = int(st["layers"]), int(st["hidden"])
        except (KeyError, ValueError, TypeError):
            raise ModelLoadError(f"{folder.manifest_path}: \"state\" must give the "
                                 "recurrent state's size, {\"layers\": L, \"hidden\": H} "
                                 f"(h0/c0 are [L, batch, H]); found {st!r}", "contract") from None
        try:
            vocab = CharVocab.from_json(folder.vocab_json())
        except (KeyError, ValueError, TypeError) as e:
            raise ModelLoadError(f"{folder.vocab_path}: not a character vocabulary of this "
                                 f"project ({type(e).__name__}: {e}); the format is in "
                                 "docs/models.md (vocab.json)") from None
        return cls(**common, vocab=vocab, layers=layers, hidden=hidden)

    # -- encode / decode -----------------------------------------------------------
    def encode(self, prompt: str) -> tuple[list[int], int]:
        """(ids, how many characters were outside the vocabulary)."""
        assert self.vocab is not None
        return self.vocab.encode(prompt)

    def decode(self, ids: list[int]) -> str:
        assert self.vocab is not None
        return self.vocab.decode(ids)

    # -- run -----------------------------------------------------------------------
    def zero_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        h = np.zeros((self.layers, batch, self.hidden), dtype=np.float32)
        return h, h.copy()

    def run(self, ids: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray,
            wide: bool = False, shrink: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One call; ``shrink``: give the arena's free memory back afterwards (SHRINK)."""
        sess = self.wide if wide and self.wide is not None else self.session
        lo, hn, cn = sess.run(OUTPUTS, {"input_ids": ids, "lengths": lengths, "h0": h, "c0": c},
                              SHRINK if shrink else None)
        return lo, hn, cn

    def prepare_split(self, graph: Path,
                      make_session: Callable[..., ort.InferenceSession]) -> None:
        """A second session on ``WIDE_THREADS`` intra-op threads, kept only if its
        answers equal the one-thread session's exactly on a prefill and a step of
        padded batches (and a lone row)."""
        try:
            wide = make_session(graph, WIDE_THREADS)
        except Exception as e:  # ORT's several exception types; the one-thread session serves
            log.warning("no two-thread session for lone calls (%s: %s)", type(e).__name__, e)
            return
        ids, lens = probe_batch(self.probe_vocab)
        rng = np.random.default_rng(0)
        worst = 0.0
        step = np.ascontiguousarray(ids[:, :1])  # one character per row
        for B, feed_ids, feed_lens in ((2, ids, lens), (2, step, np.ones(2, np.int64)),
                                       (1, ids[:1], lens[:1])):
            h = rng.normal(0, 0.5, (self.layers, B, self.hidden)).astype(np.float32)
            c = rng.normal(0, 0.5, (self.layers, B, self.hidden)).astype(np.float32)
            feed = {"input_ids": feed_ids, "lengths": feed_lens, "h0": h, "c0": c}
            for a, b in zip(self.session.run(OUTPUTS, feed), wide.run(OUTPUTS, feed), strict=True):
                worst = max(worst, float(np.max(np.abs(a - b))))
        if worst != 0.0:
            log.warning("the two-thread session differs from the one-thread one by %.3g; "
                        "lone calls use one thread", worst)
            return
        self.wide = wide

    def describe(self) -> dict[str, Any]:
        # whether a lone stream's calls run on two intra-op threads
        return {**super().describe(), "wide_lone_calls": self.wide is not None}

    def warmup(self) -> None:
        for B, T in ((1, 1), (1, 64), (8, 1)):
            h, c = self.zero_state(B)
            self.run(np.ones((B, T), dtype=np.int64), np.full(B, T, dtype=np.int64), h, c)

    def probe(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        h, c = self.zero_state(len(lens))
        return self.run(ids, lens, h, c)[0]

    @property
    def probe_vocab(self) -> int:
        return self.vocab.vocab_size if self.vocab else 2
