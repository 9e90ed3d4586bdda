"""Labelled text for the classifier (``train_sentiment --data``): the readers.

Accepted for ``--data`` (and for ``--test-data`` / ``--val-data``):

- a CSV (``.csv``), TSV (``.tsv``/``.tab``) or JSON Lines (``.jsonl``/``.ndjson``) file,
  one example a row; the text and label columns are ``--text-column`` and
  ``--label-column``, by default the first present of ``TEXT_COLUMNS`` and
  ``LABEL_COLUMNS`` (text/label, review/sentiment, ...);
- a Parquet file (``.parquet``) when pyarrow or pandas is installed (neither is a
  dependency of this project: the error says so);
- a folder per label: ``DIR/<label>/*.txt``, one example a file (the IMDB-style
  ``DIR/train/<label>/`` and ``DIR/test/<label>/`` are read as the two splits);
- the IMDB archive (``aclImdb_v1.tar.gz``), its extracted folder or a URL, as
  ``training.data.load_imdb`` reads them (labels negative, positive).

Label names come from the data: every distinct value of the label column (or folder
name) of the training file, in sorted order (numbers in numeric order; a set of exactly
{negative, positive} as negative, positive). A row's label is its index in that list.
The splits: the test split is optional (``--test-data``; an IMDB archive brings its
own); validation is carved from train unless ``--val-data`` is given.

Every problem raises ``DataError`` with one line naming the file, the row and what was
expected; the command line prints it without a traceback (exit 2).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

from training.data import DataError, Review, load_imdb

TEXT_COLUMNS = ("text", "review", "sentence", "content", "document", "body")
LABEL_COLUMNS = ("label", "sentiment", "labels", "class", "category", "rating", "stars",
                 "target")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".parquet": "parquet"}
IMDB_LABELS = ["negative", "positive"]


def order_labels(names: set[str]) -> list[str]:
    """The label list: sorted, numbers numerically, {negative, positive} as in IMDB."""
    if names == set(IMDB_LABELS):
        return list(IMDB_LABELS)
    if all(re.fullmatch(r"-?\d+(\.\d+)?", n) for n in names):
        return sorted(names, key=float)
    return sorted(names)


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str,
          flag: str, where: str) -> str:
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where}: no {what} column {wanted!r} (columns: "
                            f"{', '.join(map(repr, columns)) or 'none'}); pass {flag} NAME")
        return wanted
    lower = {c.lower(): c for c in columns}
    for d in defaults:
        if d in lower:
            return lower[d]
    raise DataError(f"{where}: no {what} column (looked for {', '.join(defaults)}; columns: "
                    f"{', '.join(map(repr, columns)) or 'none'}); pass {flag} NAME")


def _rows_csv(path: Path, delimiter: str):
    """(row label for errors, columns, dict) of a CSV/TSV file with a header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    with f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file; expected a header row naming the "
                                "text and label columns, then one example a row")
            header = [h.strip() for h in header]
            yield None, header, None
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                where = f"{path}, line {reader.line_num}"
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} fields, expected {len(header)} "
                                    f"(the header's); quote fields holding a "
                                    f"{'tab' if delimiter == chr(9) else 'comma'}")
                yield where, header, dict(zip(header, row, strict=True))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                            "save it as UTF-8") from None
        except csv.Error as e:
            raise DataError(f"{path}, line {reader.line_num}: not valid "
                            f"{'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None


def _rows_jsonl(path: Path):
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    columns: list[str] | None = None
    with f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}, line {n}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: not a JSON object ({e.msg}); expected one "
                                    "object a line, e.g. {\"text\": \"...\", \"label\": \"...\"}"
                                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(f"{where}: a JSON {type(obj).__name__}, expected an "
                                    "object with the text and label fields")
                if columns is None:
                    columns = list(obj)
                    yield None, columns, None
                yield where, columns, obj
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    if columns is None:
        raise DataError(f"{path}: no rows; expected one JSON object a line")


def _rows_parquet(path: Path):
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow or pandas, and neither is "
                            "installed (pip install pyarrow); or save the data as CSV or "
                            "JSONL") from None
        rows = pd.read_parquet(path).to_dict("records")
    except Exception as e:  # pyarrow's errors are many
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    columns = list(rows[0])
    yield None, columns, None
    for i, r in enumerate(rows):
        yield f"{path}, row {i + 1}", columns, r


def read_table(path: str | Path, text_column: str | None = None,
               label_column: str | None = None) -> list[tuple[str, str, str]]:
    """(text, label name, where) of every row of a CSV/TSV/JSONL/Parquet file."""
    path = Path(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; expected "
                        f"{', '.join(TABLE_SUFFIXES)}, a folder per label, or the IMDB archive")
    rows = (_rows_csv(path, "," if kind == "csv" else "\t") if kind in ("csv", "tsv")
            else _rows_jsonl(path) if kind == "jsonl" else _rows_parquet(path))
    out: list[tuple[str, str, str]] = []
    t_col = l_col = ""
    for where, columns, row in rows:
        if row is None:  # the header
            t_col = _pick(columns, text_column, TEXT_COLUMNS, "text", "--text-column", str(path))
            l_col = _pick(columns, label_column, LABEL_COLUMNS, "label", "--label-column",
                          str(path))
            continue
        text, label = row.get(t_col), row.get(l_col)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: the text ({t_col!r}) is "
                            f"{'empty' if text in (None, '') else repr(text)[:40]}; expected "
                            "a non-empty string")
        if isinstance(label, bool) or label is None or (isinstance(label, str)
                                                        and not label.strip()):
            raise DataError(f"{where}: the label ({l_col!r}) is {label!r}; expected a label "
                            "name or number")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, str | int | float):
            raise DataError(f"{where}: the label ({l_col!r}) is a {type(label).__name__}; "
                            "expected one label name or number per row")
        out.append((text, str(label).strip(), where))
    if not out:
        raise DataError(f"{path}: a header but no rows")
    return out


def read_label_folders(root: Path) -> list[tuple[str, str, str]]:
    """(text, label, where) of ``root/<label>/*.txt``."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.txt")):
            try:
                text = f.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                "expected one UTF-8 example a file") from None
            if text.strip():
                out.append((text, d.name, str(f)))
    return out


def _label_dirs(root: Path) -> list[Path]:
    return [d for d in root.iterdir() if d.is_dir() and any(d.glob("*.txt"))]


def _is_imdb(path: Path) -> bool:
    root = path if (path / "train").is_dir() else path / "aclImdb"
    return (root / "train" / "pos").is_dir() and (root / "train" / "neg").is_dir()


def read_rows(source: str | Path, text_column: str | None = None,
              label_column: str | None = None) -> dict[str, list[tuple[str, str, str]]]:
    """The rows of ``source`` by split: ``{"train": [...]}`` and, for a folder with
    ``train/`` and ``test/`` label folders, ``"test"`` too."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a CSV, TSV, JSONL or Parquet "
                        "file, a folder per label, or the IMDB archive")
    if path.is_file():
        return {"train": read_table(path, text_column, label_column)}
    splits = {s: path / s for s in ("train", "test") if (path / s).is_dir()}
    if "train" in splits and _label_dirs(splits["train"]):
        return {s: read_label_folders(d) for s, d in splits.items()}
    if not _label_dirs(path):
        raise DataError(f"{path}: no label folders; expected {path}/<label>/*.txt (one "
                        "folder per label, one example a file)")
    return {"train": read_label_folders(path)}


def _reviews(rows: list[tuple[str, str, str]], labels: list[str], what: str
             ) -> list[Review]:
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for text, label, where in rows:
        if label not in index:
            raise DataError(f"{where}: label {label!r} is not one of the training data's "
                            f"labels ({', '.join(labels)}); every {what} label must occur "
                            "in the training data")
        out.append(Review(text, index[label]))
    return out


def is_imdb_source(source: str | Path) -> bool:
    """Whether ``training.data.load_imdb`` reads ``source``: a URL, a tar archive, or an
    extracted folder in the aclImdb layout."""
    s = str(source)
    if s.startswith(("http://", "https://")):
        return True
    path = Path(s).expanduser()
    if path.is_dir():
        return _is_imdb(path)
    return path.is_file() and path.suffix.lower() not in TABLE_SUFFIXES and (
        tarfile.is_tarfile(path) if path.exists() else False)


def load_dataset(source: str | Path, sha256: str | None = None, *,
                 text_column: str | None = None, label_column: str | None = None,
                 test_data: str | None = None, val_data: str | None = None
                 ) -> dict[str, Any]:
    """``{"train", "test", "validation", "labels"}``: Review lists (``test`` may be
    empty, ``validation`` is None when it is to be carved from train) and the label
    names (index = ``Review.label``)."""
    if is_imdb_source(source):
        data = load_imdb(source, sha256, require_test=False)  # the test split is optional
        out: dict[str, Any] = {"train": data["train"], "test": data["test"],
                               "validation": None, "labels": list(IMDB_LABELS)}
    else:
        path = Path(str(source)).expanduser()
        if sha256 and path.is_file():
            from training.data import sha256_file

            if sha256_file(path) != sha256.lower():
                raise DataError(f"checksum mismatch for {path}: expected sha256 {sha256}")
        rows = read_rows(source, text_column, label_column)
        names = {label for _, label, _ in rows["train"]}
        if len(names) < 2:
            raise DataError(f"{source}: every training row has the label "
                            f"{next(iter(names))!r}; a classifier needs at least two labels")
        labels = order_labels(names)
        out = {"train": _reviews(rows["train"], labels, "training"),
               "test": _reviews(rows.get("test", []), labels, "test"),
               "validation": None, "labels": labels}
    for key, extra in (("test", test_data), ("validation", val_data)):
        if extra:
            rows = read_rows(extra, text_column, label_column)
            got = [r for split in rows.values() for r in split]
            out[key] = _reviews(got, out["labels"], key)
    return out


def label_accuracy_onnx(model: bytes | str, tok, reviews: list[Review],
                        batch_size: int = 64, encoded: list | None = None) -> dict:
    """Test accuracy of a graph of more than two labels (``probability`` [B, labels])
    through ONNX Runtime, batched by length."""
    import time

    import numpy as np

    from seqcore import runtime
    from training.evaluate import ort_session

    t0 = time.time()
    sess = ort_session(model)
    enc = encoded if encoded is not None else [tok.encode(r.text, offsets=False)
                                                for r in reviews]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    pred = np.zeros(len(enc), dtype=np.int64)
    for i in range(0, len(order), batch_size):
        b = order[i:i + batch_size]
        ids, lens = runtime.pad_rows([enc[j].ids for j in b], tok.unk_id)
        pred[b] = sess.run(["probability"], {"input_ids": ids, "lengths": lens})[0].argmax(-1)
    correct = pred == np.array([r.label for r in reviews])
    long = np.array([e.truncated for e in enc])
    return {"test_accuracy": round(float(correct.mean()), 4), "test_reviews": len(reviews),
            "test_accuracy_truncated_reviews": round(float(correct[long].mean()), 4)
            if long.any() else None,
            "truncated_reviews": int(long.sum()),
            "evaluated_with": "onnxruntime", "eval_seconds": round(time.time() - t0, 1)}
