"""Shared fixtures: tiny exported models (no data, no network) and app clients.

``tiny_models_dir``: a models folder with a small sentiment and a small char model,
random weights, exported through the real export path (checks included). Fast, and
enough for behaviour that does not depend on model quality.

``models_dir``: the committed models in ``models/`` (the real ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_MODELS = ROOT / "models"
# training runs in tests prepare their data afresh: no entry of the prepared-data cache
# (training/prepcache.py) is read or written unless a test names a cache folder
os.environ["SEQSERVE_PREP_CACHE"] = "off"


def build_tiny_models(out: Path, seed: int = 0) -> Path:
    import torch

    from seqcore.tokenizer import CharVocab, WordTokenizer
    from training.export import (
        build_char_graph,
        build_sentiment_graph,
        check_char,
        check_sentiment,
    )
    from training.manifest import write_model_folder
    from training.models import CharConfig, CharLSTM, SentimentConfig, SentimentLSTM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    words = ["good", "great", "bad", "awful", "movie", "film", "plot", "the", "a", "it", "was"]
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(50)]
    tok = WordTokenizer.build(texts, max_vocab=50, min_count=1, max_len=40, head_len=10)
    sm = SentimentLSTM(SentimentConfig(vocab_size=tok.vocab_size, emb_dim=16, hidden=8))
    sm.eval()
    g = build_sentiment_graph(sm)
    write_model_folder(out / "sentiment", g, tok, {
        "name": "sentiment", "version": "0.0.test", "task": "text-classification",
        "labels": ["negative", "positive"], "metrics": {"test_accuracy": None},
        "export_checks": check_sentiment(sm, g)})
    vocab = CharVocab.build(string.ascii_lowercase + " .,;:!?'\n")
    cm = CharLSTM(CharConfig(vocab_size=vocab.vocab_size, emb_dim=8, hidden=16, layers=2))
    cm.eval()
    g2 = build_char_graph(cm)
    write_model_folder(out / "chargen", g2, vocab, {
        "name": "chargen", "version": "0.0.test", "task": "text-generation",
        "metrics": {}, "export_checks": check_char(cm, g2), "state": {"layers": 2, "hidden": 16}})
    return out


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    # SEQSERVE_TEST_MODELS_DIR points the suite at other model folders (development)
    root = Path(os.environ.get("SEQSERVE_TEST_MODELS_DIR", COMMITTED_MODELS))
    if not (root / "sentiment" / "manifest.json").exists():
        pytest.skip(f"no models in {root}")
    return root


@pytest.fixture
def make_client() -> Iterator[Callable[..., object]]:
    """make_client(models_dir, **settings) -> a started TestClient (lifespan run)."""
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    stack = contextlib.ExitStack()

    def factory(models: Path, **overrides: object) -> TestClient:
        settings = Settings(models_dir=models, **overrides)
        # a loopback client, as a test server's are (the reload route answers those
        # without a key when none is configured)
        return stack.enter_context(TestClient(create_app(settings), client=("127.0.0.1", 50000)))

    with stack:
        yield factory


@pytest.fixture
def client(make_client: Callable[..., object], models_dir: Path):
    """A client of the app serving the committed models."""
    return make_client(models_dir)


@pytest.fixture
def tiny_client(make_client: Callable[..., object], tiny_models_dir: Path):
    return make_client(tiny_models_dir)


class LogRecords(logging.Handler):
    """Keeps everything the service logs: the records, and each as one line with all
    its attributes (to search for what must never be logged)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record) + " " + repr(record.__dict__))


@pytest.fixture
def capture_log() -> Iterator[Callable[[], LogRecords]]:
    """capture_log() -> a handler seeing everything the service logs from now on, at
    every level. Call it after the app is created: creating an app resets the
    handlers of its logger (which does not propagate, so caplog sees nothing)."""
    logger = logging.getLogger("seqserve")
    level, handlers = logger.level, []

    def start() -> LogRecords:
        logger.setLevel(logging.DEBUG)
        handlers.append(LogRecords())
        logger.addHandler(handlers[-1])
        return handlers[-1]

    yield start
    for h in handlers:
        logger.removeHandler(h)
    logger.setLevel(level)
