"""The character generator: its stages.

- load: the graph takes ``input_ids`` [B, T], ``lengths`` [B] and the recurrent state
  ``h0``/``c0`` [layers, B, hidden] and returns the next-character ``logits`` [B, V]
  after each row's last real step, and the state there (``hN``/``cN``). GRU and
  vanilla-RNN graphs take and return a ``c`` they leave untouched, so every cell has
  the same interface (the manifest's ``state`` gives layers and hidden);
- encode: ``CharVocab.encode`` (lowercased; characters outside the vocabulary read as
  ``<unk>`` and are counted);
- run: a prefill (prompts of different lengths, ``sequence_lens``) or a step ([B, 1]);
- decode: ids -> text (``CharVocab.decode``).

The sampling of the next character lives with the generation loop that calls
``run`` every step (app/generation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqcore.modelfolder import ModelFolder
from seqcore.tasks import LoadedModel, check_contract, register
from seqcore.tokenizer import CharVocab

INPUTS = {"input_ids", "lengths", "h0", "c0"}
OUTPUTS = ["logits", "hN", "cN"]


@register
@dataclass
class CharModel(LoadedModel):
    task = "text-generation"
    vocab: CharVocab | None = None
    layers: int = 0
    hidden: int = 0

    # -- load ----------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: ModelFolder, common: dict[str, Any]) -> CharModel:
        check_contract(folder, common["session"], INPUTS, OUTPUTS)
        st = folder.manifest.get("state") or {}
        return cls(**common, vocab=CharVocab.from_json(folder.vocab_json()),
                   layers=int(st["layers"]), hidden=int(st["hidden"]))

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

    def run(self, ids: np.ndarray, lengths: np.ndarray, h: np.ndarray, c: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hn, cn = self.session.run(OUTPUTS, {"input_ids": ids, "lengths": lengths,
                                                "h0": h, "c0": c})
        return lo, hn, cn

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
