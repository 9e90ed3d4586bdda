"""Data sources: the IMDB Large Movie Review Dataset v1 and the Nietzsche text.

Accepted for IMDB: the official ``aclImdb_v1.tar.gz`` archive, its extracted
``aclImdb/`` folder (or the folder holding it), the labelled-only archive in
``../shared/data``, or an http(s) URL (downloaded once into a cache folder with a
progress bar and a sha256 check, then read as an archive). Archives are streamed
member by member; nothing is unpacked to disk.

Every problem with the data raises ``DataError`` with a message naming the problem
and what to pass instead; the command-line scripts print it without a traceback.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_IMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")


class DataError(Exception):
    """A data source is missing, malformed or does not match its checksum."""


@dataclass
class Review:
    text: str
    label: int  # 1 positive, 0 negative


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEQSERVE_CACHE", Path.home() / ".cache" / "seqserve"))


def fetch(url: str, sha256: str | None = None, cache_dir: Path | None = None) -> Path:
    """Download ``url`` once into the cache and check its sha256.

    Without an expected ``sha256`` the first download's digest is recorded beside the
    file and every later use is checked against it.
    """
    from tqdm import tqdm

    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    dest = cache / name
    digest_file = cache / (name + ".sha256")
    if not dest.exists():
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                total = int(r.headers.get("Content-Length") or 0) or None
                with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                                desc=f"downloading {name}") as bar:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as e:
            tmp.unlink(missing_ok=True)
            raise DataError(
                f"cannot download {url} ({e}); this machine may be offline: "
                "download the file elsewhere and pass its local path instead"
            ) from None
        tmp.rename(dest)
    actual = sha256_file(dest)
    expected = sha256 or (digest_file.read_text().strip() if digest_file.exists() else None)
    if expected and actual != expected.lower():
        raise DataError(
            f"checksum mismatch for {dest}: sha256 {actual}, expected {expected}; "
            "delete the file to download it again, or pass the right --sha256"
        )
    digest_file.write_text(actual)
    return dest


def _resolve(source: str | Path, sha256: str | None) -> Path:
    s = str(source)
    if s.startswith(("http://", "https://")):
        return fetch(s, sha256)
    path = Path(s).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass the dataset file, "
                        "its extracted folder, or an http(s) URL")
    if sha256 and path.is_file() and sha256_file(path) != sha256.lower():
        raise DataError(f"checksum mismatch for {path}: expected sha256 {sha256}")
    return path


def load_imdb(source: str | Path, sha256: str | None = None, require_test: bool = True
              ) -> dict[str, list[Review]]:
    """Read the labelled IMDB reviews: ``{"train": [...], "test": [...]}`` (without
    ``require_test``, an archive or folder without test reviews gives an empty test).

    Members are read in sorted name order, so the result does not depend on the
    archive's or the file system's ordering.
    """
    path = _resolve(source, sha256)
    found: dict[str, list[tuple[str, Review]]] = {"train": [], "test": []}
    if path.is_dir():
        root = path if (path / "train").is_dir() and (path / "test").is_dir() else path / "aclImdb"
        for split in ("train", "test"):
            for lab in ("pos", "neg"):
                d = root / split / lab
                if d.is_dir():
                    for f in d.glob("*.txt"):
                        text = f.read_bytes().decode("utf-8", errors="replace")
                        found[split].append((f.name, Review(text, int(lab == "pos"))))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # streamed: one member at a time
                    m = _IMDB_MEMBER.search(member.name)
                    if not m or not member.isfile():
                        continue
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    text = fh.read().decode("utf-8", errors="replace")
                    found[m.group(1)].append(
                        (member.name, Review(text, int(m.group(2) == "pos"))))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{path} is not a readable tar archive ({e}); pass the "
                            "aclImdb_v1.tar.gz archive or its extracted aclImdb/ folder") from None
    for split, items in found.items():
        if not items and split == "test" and not require_test:
            continue
        if not items:
            raise DataError(
                f"no {split} reviews found in {path}: expected aclImdb/{split}/pos/*.txt and "
                f"aclImdb/{split}/neg/*.txt (the Large Movie Review Dataset v1 layout)")
        labels = {r.label for _, r in items}
        if labels != {0, 1}:
            raise DataError(f"the {split} split of {path} has only one class; "
                            "both pos/ and neg/ folders are needed")
    return {s: [r for _, r in sorted(items, key=lambda x: x[0])] for s, items in found.items()}


def split_train_val(reviews: list[Review], val_fraction: float, seed: int
                    ) -> tuple[list[Review], list[Review]]:
    """Carve a validation split out of train with a fixed seed."""
    idx = list(range(len(reviews)))
    random.Random(seed).shuffle(idx)
    n_val = int(round(len(reviews) * val_fraction))
    if n_val < 1 or n_val >= len(reviews):
        raise DataError(f"cannot carve a validation split of {val_fraction} from "
                        f"{len(reviews)} reviews")
    return [reviews[i] for i in idx[n_val:]], [reviews[i] for i in idx[:n_val]]


def load_text(source: str | Path, sha256: str | None = None, min_chars: int = 1000) -> str:
    """Read a plain-text corpus (e.g. nietzsche.txt) from a path or URL."""
    path = _resolve(source, sha256)
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass the text file itself (e.g. nietzsche.txt)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; pass a plain-text corpus") from None
    if len(text) < min_chars:
        raise DataError(f"{path} holds only {len(text)} characters; need at least {min_chars}")
    return text


def source_record(source: str | Path) -> dict:
    """Where the data came from, for the manifest."""
    s = str(source)
    if s.startswith(("http://", "https://")):
        p = fetch(s)
        return {"source": s, "file": p.name, "sha256": sha256_file(p)}
    p = Path(s)
    if p.is_file():
        return {"source": p.name, "sha256": sha256_file(p)}
    return {"source": p.name, "sha256": None, "note": "extracted folder"}
