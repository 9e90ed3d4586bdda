"""The benchmark's inputs: where the models and data are, the IMDB-length review mix,
the fixed short review, and the generation prompts.

The review mix is drawn from the IMDB test split when ../shared/data is there, else
synthetic reviews with IMDB's length distribution; the short review is one fixed
~450-character text written for the benchmark (per-request overhead dominates there).
"""

from __future__ import annotations

import random
from pathlib import Path

from seqcore.modelfolder import ModelFolder
from seqcore.tokenizer import CharVocab, WordTokenizer

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
IMDB = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
NIETZSCHE = ROOT.parent / "shared" / "data" / "nietzsche.txt"
PEER_PYTHON = ROOT / ".cache" / "bench" / "litserve-venv" / "bin" / "python"
TEMPERATURE = 0.8
SHORT_PROMPT = 20  # characters: the second time-to-first-character figure's prompt

SHORT_REVIEW = (
    "I went in expecting very little and came out surprised. The lead gives a warm, "
    "understated performance, and the supporting cast never overplays a scene. The script "
    "drags a little in the middle, where a subplot goes nowhere, but the last half hour "
    "pulls everything together with real care. The photography is lovely without showing "
    "off, and the score knows when to stay quiet. Not a masterpiece, but an honest, well "
    "made film that I would happily watch again."
)


def review_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` review texts with IMDB's length mix (the same ``n`` and seed: the same texts)."""
    if IMDB.exists():
        from training.data import load_imdb

        test = load_imdb(IMDB)["test"]
        rng = random.Random(seed)
        return [r.text for r in rng.sample(test, n)]
    # synthetic: word counts drawn like IMDB's (median ~175, long tail)
    rng = random.Random(seed)
    tok = WordTokenizer.load(ModelFolder.open(MODELS / "sentiment").vocab_path)
    words = tok.itos[2:5000]
    return [" ".join(rng.choice(words) for _ in range(int(rng.lognormvariate(5.2, 0.6))))
            for _ in range(n)]


def prompts(n: int, length: int = 200, seed: int = 0) -> list[str]:
    """``n`` generation prompts of ``length`` characters from the Nietzsche corpus (or
    random characters of the model's vocabulary without it)."""
    rng = random.Random(seed)
    if NIETZSCHE.exists():
        text = NIETZSCHE.read_text(encoding="utf-8")
        starts = [rng.randrange(0, len(text) - length) for _ in range(n)]
        return [text[s : s + length] for s in starts]
    vocab = CharVocab.load(ModelFolder.open(MODELS / "chargen").vocab_path)
    return ["".join(rng.choice(vocab.chars[1:]) for _ in range(length)) for _ in range(n)]
