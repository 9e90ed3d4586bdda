"""A Hugging Face tokenizer folder for a character model (``tokenizer.json``,
``tokenizer_config.json``), so that benchmark tools that count tokens with a
``transformers`` tokenizer (aiperf, guidellm) count what the service counts: one token
per character of the model's vocabulary.

The tokenizer is built from the model's ``vocab.json`` (``chars``: id -> character,
``unk_id``) as the ``tokenizers`` library's JSON, written directly (this project does
not depend on ``tokenizers``): a lowercase normaliser (the vocabulary is lowercase, as
the service lowercases prompts), a pre-tokeniser that isolates every character, a
word-level model mapping each character to its id (anything else to the unknown
token), and a decoder that joins the tokens with nothing between them. Token ids are
therefore the ids the service takes as a token-id prompt on /v1/completions.

    python -m bench.char_tokenizer models/chargen .cache/bench/char-tokenizer
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqcore.modelfolder import ModelFolder


def tokenizer_json(chars: list[str], unk_id: int) -> dict:
    unk = chars[unk_id]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": unk_id, "content": unk, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": {"type": "Lowercase"},
        # every character its own piece (``[\s\S]``: newlines too)
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                          "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": {c: i for i, c in enumerate(chars)},
                  "unk_token": unk},
    }


def write(model_dir: Path, out: Path, max_length: int = 8000) -> Path:
    """The tokenizer folder of the character model in ``model_dir``, written to ``out``."""
    vocab = json.loads(ModelFolder.at(model_dir).vocab_path.read_text())
    if vocab.get("kind") != "char":
        raise SystemExit(f"{model_dir}: not a character model (vocab kind {vocab.get('kind')!r})")
    chars, unk_id = list(vocab["chars"]), int(vocab["unk_id"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(chars, unk_id),
                                                   ensure_ascii=False, indent=1))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": chars[unk_id],
        "model_max_length": max_length, "clean_up_tokenization_spaces": False,
        "add_bos_token": False, "add_eos_token": False}, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps({"unk_token": chars[unk_id]}))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-length", type=int, default=8000,
                    help="model_max_length (SEQSERVE_MAX_PROMPT_CHARS by default: 8000)")
    a = ap.parse_args(argv)
    print(write(a.model_dir, a.out, a.max_length))


if __name__ == "__main__":
    main()
