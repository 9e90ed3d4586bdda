"""The prepared-data cache of ``train_sentiment``: the work a run does before its first
step, kept for the next run on the same data with the same recipe.

Three kinds of entry, each a folder ``<kind>-<key>`` under the cache folder
(``--cache-dir``; else the environment's ``SEQSERVE_PREP_CACHE``; else
``.cache/prepared`` in the repository, git-ignored; ``off``: no cache; the test suite
sets ``off``, and its tests of the cache name a folder):

- ``dataset``: the data as read (train, test, validation rows, label names): keyed by
  the data's sha256 (a folder: its files' names, sizes and modification times), the
  test and validation files' likewise, and the column flags;
- ``encoded``: the vocabulary and the token ids of the training and validation rows:
  keyed by the dataset's key, the split (``--val-fraction``, ``--seed``) and the
  tokenizer's recipe (``--max-vocab``, ``--min-count``, ``--max-len``, ``--head-len``);
- ``word2vec``: the embedding initialisation: keyed by the encoded entry's key, the
  dimension, ``--w2v-epochs`` and ``--seed``;
- ``test``: the token ids of the test split (and which were truncated), for the final
  evaluation through ONNX Runtime: keyed by the encoded entry's key.

A key is the sha256 of those inputs and of ``VERSION`` (bumped when what is stored
changes), so a changed file or option is a different entry, never a stale one. An entry
is written to a temporary folder and renamed into place: a run stopped while writing
leaves no half entry. Runs with ``--cad`` or ``--init-from`` read and write no
``encoded`` or ``word2vec`` entry (their inputs are more than the data); nothing is
ever evicted: delete the folder to free the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from seqcore.modelfolder import VOCAB
from seqcore.tokenizer import WordTokenizer

VERSION = 1
DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".cache" / "prepared"


def source_digest(source: str | None) -> str | None:
    """What identifies a data source: a file's sha256; a folder's file names, sizes and
    modification times (hashing 50,000 small files' contents would cost what the cache
    saves); a URL as it is (``training.data.fetch`` checks its download's sha256)."""
    if not source:
        return None
    if source.startswith(("http://", "https://")):
        return "url:" + source
    path = Path(source).expanduser()
    if path.is_file():
        from training.data import sha256_file

        return "sha256:" + sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "tree:" + h.hexdigest()
    return None  # missing: the reader says so


class Encoding(NamedTuple):
    """What the evaluation reads of a ``seqcore.tokenizer.Encoded``."""

    ids: list[int]
    truncated: bool


def _key(*parts: Any) -> str:
    blob = json.dumps([VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(lens.sum()))
    return flat, np.concatenate([[0], np.cumsum(lens)])


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


class PrepCache:
    """Entries under ``root``; a disabled cache (``root`` None) finds nothing and keeps
    nothing."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None
        self.hits: list[str] = []
        self.misses: list[str] = []

    @classmethod
    def from_option(cls, value: str) -> PrepCache:
        value = value or os.environ.get("SEQSERVE_PREP_CACHE", "")
        return cls(None if value == "off" else (value or DEFAULT_DIR))

    def _dir(self, kind: str, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{kind}-{key}"

    def _find(self, kind: str, key: str | None) -> Path | None:
        d = self._dir(kind, key) if key else None
        if d is not None and (d / "done").is_file():
            self.hits.append(kind)
            print(f"prepared-data cache: {kind} from {d}", flush=True)
            return d
        self.misses.append(kind)
        return None

    def _write(self, kind: str, key: str | None, fill) -> None:  # noqa: ANN001
        d = self._dir(kind, key) if key else None
        if d is None:
            return
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=d.parent))
        try:
            fill(tmp)
            (tmp / "done").write_text("")
            if d.exists():  # another run wrote it meanwhile
                shutil.rmtree(tmp)
                return
            tmp.rename(d)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        print(f"prepared-data cache: {kind} written to {d}", flush=True)

    # -- the dataset -------------------------------------------------------------
    def dataset_key(self, data: str, text_column: str, label_column: str, test_data: str,
                    val_data: str) -> str | None:
        if self.root is None:
            return None
        digest = source_digest(data)
        if digest is None:
            return None
        return _key("dataset", digest, text_column, label_column,
                    source_digest(test_data), source_digest(val_data))

    def dataset(self, key: str | None, load) -> dict:  # noqa: ANN001
        d = self._find("dataset", key)
        if d is not None:
            with open(d / "data.pkl", "rb") as f:
                return pickle.load(f)
        data = load()

        def fill(tmp: Path) -> None:
            with open(tmp / "data.pkl", "wb") as f:
                pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)

        self._write("dataset", key, fill)
        return data

    # -- vocabulary and token ids ------------------------------------------------
    @staticmethod
    def encoded_key(dataset_key: str | None, cfg: Any) -> str | None:
        if dataset_key is None or cfg.cad or cfg.init_from:
            return None
        return _key("encoded", dataset_key, cfg.val_fraction, cfg.seed, cfg.max_vocab,
                    cfg.min_count, cfg.max_len, cfg.head_len)

    def encoded(self, key: str | None
                ) -> tuple[WordTokenizer, list[list[int]], list[list[int]]] | None:
        d = self._find("encoded", key)
        if d is None:
            return None
        tok = WordTokenizer.from_json(json.loads((d / VOCAB).read_text()))
        z = np.load(d / "ids.npz")
        return (tok, _unragged(z["train"], z["train_off"]),
                _unragged(z["val"], z["val_off"]))

    def save_encoded(self, key: str | None, tok: WordTokenizer, train: list[list[int]],
                     val: list[list[int]]) -> None:
        def fill(tmp: Path) -> None:
            (tmp / VOCAB).write_text(json.dumps(tok.to_json()))
            tr, tr_off = _ragged(train)
            va, va_off = _ragged(val)
            np.savez(tmp / "ids.npz", train=tr, train_off=tr_off, val=va, val_off=va_off)

        self._write("encoded", key, fill)

    # -- the test split's token ids ------------------------------------------------
    @staticmethod
    def test_key(encoded_key: str | None) -> str | None:
        return None if encoded_key is None else _key("test", encoded_key)

    def test_encoded(self, key: str | None, make) -> list[Encoding]:  # noqa: ANN001
        d = self._find("test", key)
        if d is not None:
            z = np.load(d / "ids.npz")
            return [Encoding(ids, bool(t)) for ids, t in
                    zip(_unragged(z["ids"], z["off"]), z["truncated"], strict=True)]
        enc = [Encoding(e.ids, e.truncated) for e in make()]

        def fill(tmp: Path) -> None:
            flat, off = _ragged([e.ids for e in enc])
            np.savez(tmp / "ids.npz", ids=flat, off=off,
                     truncated=np.array([e.truncated for e in enc], dtype=bool))

        self._write("test", key, fill)
        return enc

    # -- word2vec ----------------------------------------------------------------
    @staticmethod
    def word2vec_key(encoded_key: str | None, dim: int, epochs: int, seed: int) -> str | None:
        return None if encoded_key is None else _key("word2vec", encoded_key, dim, epochs,
                                                     seed)

    def word2vec(self, key: str | None, make):  # noqa: ANN001
        import torch

        d = self._find("word2vec", key)
        if d is not None:
            return torch.from_numpy(np.load(d / "vectors.npy"))
        vectors = make()
        self._write("word2vec", key,
                    lambda tmp: np.save(tmp / "vectors.npy", vectors.numpy()))
        return vectors
