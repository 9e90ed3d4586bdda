"""Benchmark clients as users run them, unchanged, against a real server on loopback
(the committed models): aiperf's default streamed run (/v1/chat/completions), aiperf
on /v1/completions with the options its start-up warning recommends (``ignore_eos``,
``min_tokens``), and guidellm's default streamed run, each with the character
tokenizer built from the served model (bench/char_tokenizer.py). Any failed request
fails the test, whatever the tool's exit status.

The tools live in venvs of their own (``make bench-tools``). Without them these tests
skip, except with SEQSERVE_BENCH_TOOLS=required (``make test-bench-tools``, which CI
runs), where a missing tool fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import char_tokenizer
from bench.clients import AIPERF, GUIDELLM, run_aiperf, run_guidellm
from bench.server import ServerProcess

REQUIRED = os.environ.get("SEQSERVE_BENCH_TOOLS") == "required"
REQUESTS, CONCURRENCY, ISL, OSL = 24, 4, 100, 50


def _need(tool: Path) -> None:
    if not tool.exists():
        if REQUIRED:
            pytest.fail(f"{tool} is not installed (make bench-tools)")
        pytest.skip(f"{tool.name} is not installed (make bench-tools)")


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(models_dir, log_level="warning") as srv:
        yield srv


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return char_tokenizer.write(models_dir / "chargen", tmp_path_factory.mktemp("char-tok"))


def _no_errors(r: dict) -> None:
    assert r["errors"] == 0, (r["errors"], r.get("error_examples"), r["log"][-3000:])
    assert r["requests"] == REQUESTS, r["log"][-3000:]
    # the tool counted, with the character tokenizer, the characters asked for
    assert r["output_tokens_avg"] == OSL, r["output_tokens_avg"]
    assert r["ttft_ms_p50"] is not None and r["ttft_ms_p50"] > 0


def test_the_character_tokenizer_counts_what_the_service_counts(tokenizer: Path,
                                                                models_dir: Path):
    _need(AIPERF)
    from seqcore.tokenizer import CharVocab

    vocab = CharVocab.from_json(json.loads((models_dir / "chargen" / "vocab.json").read_text()))
    text = "The good film,\nreally (5/10)! ~"
    code = ("import json, sys\nfrom transformers import AutoTokenizer\n"
            "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "ids = t.encode(sys.argv[2], add_special_tokens=False)\n"
            "print(json.dumps([ids, t.decode(ids)]))")
    out = subprocess.run([str(AIPERF.parent / "python"), "-c", code, str(tokenizer), text],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    ids, decoded = json.loads(out.strip().splitlines()[-1])
    assert ids == vocab.encode(text)[0]  # one id per character, the service's ids
    assert decoded == vocab.decode(ids).replace("\ufffd", vocab.chars[vocab.unk_id])


def test_aiperf_default_streamed_run_has_no_errors(server: ServerProcess, tokenizer: Path,
                                                   tmp_path: Path):
    _need(AIPERF)
    r = run_aiperf(server.url, "chargen", tokenizer, requests=REQUESTS,
                   concurrency=CONCURRENCY, input_tokens=ISL, output_tokens=OSL,
                   out_dir=tmp_path)
    assert r["endpoint"] == "chat"  # aiperf's default endpoint type
    _no_errors(r)


def test_aiperf_completions_with_ignore_eos_and_min_tokens_has_no_errors(
        server: ServerProcess, tokenizer: Path, tmp_path: Path):
    _need(AIPERF)
    r = run_aiperf(server.url, "chargen", tokenizer, endpoint="completions",
                   requests=REQUESTS, concurrency=CONCURRENCY, input_tokens=ISL,
                   output_tokens=OSL, extra_inputs={"ignore_eos": True, "min_tokens": OSL},
                   out_dir=tmp_path)
    _no_errors(r)


def test_guidellm_default_streamed_run_has_no_errors(server: ServerProcess, tokenizer: Path,
                                                     tmp_path: Path):
    _need(GUIDELLM)
    r = run_guidellm(server.url, "chargen", tokenizer, requests=REQUESTS,
                     concurrency=CONCURRENCY, input_tokens=ISL, output_tokens=OSL,
                     out_dir=tmp_path)
    assert r["incomplete"] == 0 and r["successful"] == REQUESTS
    _no_errors(r)
