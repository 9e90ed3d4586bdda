"""Property tests (hypothesis): tokenizer offsets, sampling bounds, validation of every limit.

- Tokenizer: for ANY text, every token's offsets point at the token as written
  (``text[start:end].lower() == token.text``), tokens are ordered and disjoint, and the
  truncated encoding is the head and tail of the full one.
- Sampling: for any logits, temperature, top_k, top_p and banned ids, the sampled id
  lies in the vocabulary, is never banned, is among the top_k likeliest, and lies in
  the top_p nucleus; T = 0 is the argmax; a row's draw does not depend on its batch.
- Validation (through the app): every out-of-range value of every bounded field is a
  422 naming the field, and every in-range value is accepted.
"""

from __future__ import annotations

import json
import os
import string

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.config import Settings
from app.main import create_app
from seqcore.sampling import SamplingParams, next_distribution, sample, sample_rows
from seqcore.tokenizer import CharVocab, WordTokenizer, token_strings, tokenize

# numeric warnings (overflow, invalid value) in sampling are bugs here, not noise
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# SEQSERVE_HYPOTHESIS_SCALE=50 multiplies every example count for a deep run.
SCALE = float(os.environ.get("SEQSERVE_HYPOTHESIS_SCALE", "1"))


def n(examples: int) -> int:
    return max(1, int(examples * SCALE))


# Texts that reach the tokenizer's special cases: HTML breaks, apostrophes (ASCII and
# typographic), "!" and "?", underscores, characters whose lowercase is longer (İ),
# combining marks, zero-width and right-to-left characters.
TRICKY = "<br /> BR<br/>< br >abc'’!?_-.\u0130\u00df\u0301\u200b\u200d\u202e\u05d0\u0627 \n\t"
texts = st.one_of(st.text(), st.text(alphabet=TRICKY), st.text(alphabet=string.printable))

# --- tokenizer ---------------------------------------------------------------------------


@given(texts)
@settings(max_examples=n(400), deadline=None)
def test_token_offsets_always_round_trip(text):
    tokens = tokenize(text)
    prev_end = 0
    for t in tokens:
        assert 0 <= prev_end <= t.start < t.end <= len(text)
        assert text[t.start:t.end].lower() == t.text
        assert t.text and not t.text.isspace()
        prev_end = t.end


VOCAB = WordTokenizer(["<pad>", "<unk>", "good", "bad", "film", "!", "?", "don't", "i"],
                      max_len=12, head_len=4)


@given(st.one_of(texts, st.text(alphabet=string.printable + "<>/' " * 8)))
@settings(max_examples=n(400), deadline=None)
def test_the_fast_path_of_sentiment_reads_the_same_tokens_and_ids(text):
    assert token_strings(text) == [t.text for t in tokenize(text)]
    fast, full = VOCAB.encode(text, offsets=False), VOCAB.encode(text)
    assert (fast.ids, fast.truncated, fast.n_tokens_total) == (
        full.ids, full.truncated, full.n_tokens_total)


@given(texts)
@settings(max_examples=n(300), deadline=None)
def test_truncated_encoding_keeps_head_and_tail_with_offsets(text):
    full = tokenize(text)
    enc = VOCAB.encode(text)
    assert enc.n_tokens_total == len(full)
    assert enc.truncated == (len(full) > VOCAB.max_len)
    assert len(enc.ids) == len(enc.tokens) == min(len(full), VOCAB.max_len)
    if enc.truncated:
        tail = VOCAB.max_len - VOCAB.head_len
        assert enc.tokens == full[:VOCAB.head_len] + full[len(full) - tail:]
    else:
        assert enc.tokens == full
    for i, t in zip(enc.ids, enc.tokens, strict=True):
        assert text[t.start:t.end].lower() == t.text
        assert VOCAB.itos[i] == t.text or (i == VOCAB.unk_id and t.text not in VOCAB.stoi)


CHARS = CharVocab.build(string.ascii_lowercase + " .,;:!?'\n")


@given(texts)
@settings(max_examples=n(200), deadline=None)
def test_char_encoding_is_one_id_per_character_and_counts_unknowns(text):
    ids, unknown = CHARS.encode(text)
    assert len(ids) == len(text.lower())
    assert all(0 <= i < CHARS.vocab_size for i in ids)
    assert unknown == sum(1 for c in text.lower() if c not in CHARS.stoi)


# --- sampling ----------------------------------------------------------------------------


@st.composite
def sampling_cases(draw):
    V = draw(st.integers(2, 48))
    # any floats, or a 0.01 grid: well separated values with exact ties
    logits = draw(st.one_of(
        hnp.arrays(np.float32, V, elements=st.floats(-30, 30, width=32)),
        hnp.arrays(np.int32, V, elements=st.integers(-3000, 3000)).map(
            lambda a: (a / 100).astype(np.float32))))
    banned = tuple(sorted(draw(st.sets(st.integers(0, V - 1), max_size=V - 1))))
    # any valid temperature, down to subnormal ones such as 1e-310
    temperature = draw(st.one_of(st.just(0.0), st.floats(1e-3, 10.0),
                                 st.floats(0.0, 1e-3, exclude_min=True)))
    top_k = draw(st.one_of(st.none(), st.integers(1, V + 3)))
    top_p = draw(st.one_of(st.none(), st.floats(1e-6, 1.0)))
    seed = draw(st.integers(0, 2**63 - 1))
    return logits, SamplingParams(temperature, top_k, top_p), banned, seed


def _reference_probs(logits: np.ndarray, p: SamplingParams, banned: tuple[int, ...]):
    """p_i ∝ exp(log p_i / T) over the allowed ids, then top_k (independent of app code)."""
    allowed = np.ones(len(logits), bool)
    allowed[list(banned)] = False
    lg = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # shifts cancel in the softmax
        z = np.where(allowed, (lg - lg[allowed].max()) / p.temperature, -np.inf)
    if p.top_k is not None:
        kth = np.sort(z[allowed])[::-1][min(p.top_k, allowed.sum()) - 1]
        z = np.where(z >= kth, z, -np.inf)
    q = np.exp(z - z.max())
    return q / q.sum(), allowed


@given(sampling_cases())
@settings(max_examples=n(600), deadline=None)
def test_sampled_id_is_in_vocabulary_allowed_and_within_top_k_and_top_p(case):
    logits, p, banned, seed = case
    idx = sample(logits, p, np.random.default_rng(seed), banned)
    V = len(logits)
    assert isinstance(idx, int) and 0 <= idx < V
    assert idx not in banned
    allowed = [i for i in range(V) if i not in banned]
    lg = logits.astype(np.float64)
    # float64 log-softmax cannot separate logits closer than this (e.g. 0 and -1e-45)
    tol = 1e-9 * max(1.0, float(np.abs(lg).max()))
    if p.temperature == 0:  # greedy: the likeliest allowed id
        assert lg[idx] >= max(lg[i] for i in allowed) - tol
        return
    assert next_distribution(logits, p, banned)[idx] > 0
    if p.top_k is not None:  # fewer than k allowed ids are clearly likelier
        assert sum(1 for i in allowed if lg[i] > lg[idx] + tol) < p.top_k
    values = np.unique(lg[allowed])
    separated = bool((np.diff(values) > 1e3 * tol).all())
    # Where allowed logits are closer than float64 can order them after the
    # log-softmax, the app's order and this reference's may differ: skip those.
    if p.top_p is not None and separated:  # the mass above idx has not reached top_p yet
        q, _ = _reference_probs(logits, p, banned)
        above = q[q > q[idx] * (1 + 1e-9) + 1e-300].sum()
        assert above < p.top_p + 1e-9


def test_greedy_takes_the_lowest_id_on_exact_ties_and_skips_banned_ids():
    logits = np.array([1.0, 3.0, 3.0, 2.0, 9.0], np.float32)
    for seed in range(5):
        assert sample(logits, SamplingParams(0.0), np.random.default_rng(seed), (4,)) == 1


@given(sampling_cases())
@settings(max_examples=n(200), deadline=None)
def test_same_seed_same_id(case):
    logits, p, banned, seed = case
    a = sample(logits, p, np.random.default_rng(seed), banned)
    b = sample(logits, p, np.random.default_rng(seed), banned)
    assert a == b


@given(st.data())
@settings(max_examples=n(150), deadline=None)
def test_a_rows_draw_does_not_depend_on_its_batch(data):
    V = data.draw(st.integers(2, 32))
    B = data.draw(st.integers(1, 8))
    logits = data.draw(hnp.arrays(np.float32, (B, V), elements=st.floats(-20, 20, width=32)))
    temp = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.3, 1.0, 4.0]), min_size=B,
                                       max_size=B)))
    top_k = np.array(data.draw(st.lists(st.integers(0, V), min_size=B, max_size=B)))
    top_p = np.array(data.draw(st.lists(st.floats(0.05, 1.0), min_size=B, max_size=B)))
    u = np.array(data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=B,
                                    max_size=B)))
    banned = (0,)
    batch = sample_rows(logits, temp, top_k, top_p, u, banned)
    assert ((batch >= 1) & (batch < V)).all()
    for r in range(B):
        alone = sample_rows(logits[r:r + 1], temp[r:r + 1], top_k[r:r + 1], top_p[r:r + 1],
                            u[r:r + 1], banned)
        assert alone[0] == batch[r]


# --- validation through the app ------------------------------------------------------------

LIMITS = dict(max_text_chars=120, max_texts=3, max_prompt_chars=60, max_new_chars=20,
              max_stop=2, max_stop_chars=4)


@pytest.fixture(scope="module")
def client(tiny_models_dir):
    with TestClient(create_app(Settings(models_dir=tiny_models_dir, log_level="warning",
                                        **LIMITS))) as c:
        yield c


def _post(client, path, body):
    # ASCII-escaped JSON: lone surrogates travel as escapes, as from any JSON client
    return client.post(path, content=json.dumps(body).encode(),
                       headers={"content-type": "application/json"})


def _assert_rejected(r, field):
    assert r.status_code == 422, r.text
    msg = r.json()["error"]["message"]
    assert msg.startswith(f"{field}: "), msg


FEW = settings(max_examples=n(25), deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
word = st.text(alphabet="abcdefgh ", min_size=1, max_size=8).filter(lambda s: s.strip())
GEN_OUT_OF_RANGE = {
    "max_new_chars": st.one_of(st.integers(max_value=0), st.integers(min_value=21)),
    "temperature": st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                             st.floats(min_value=10.000001, allow_nan=False,
                                       allow_infinity=False)),
    "top_k": st.integers(max_value=0),
    "top_p": st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                       st.floats(min_value=1.0000001, allow_nan=False, allow_infinity=False)),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)),
    "stop": st.lists(st.text(alphabet="xyz", min_size=1, max_size=4), min_size=3, max_size=10),
}


@pytest.mark.parametrize("field", GEN_OUT_OF_RANGE)
def test_every_out_of_range_generation_parameter_is_rejected(client, field):
    @given(value=GEN_OUT_OF_RANGE[field])
    @FEW
    def check(value):
        _assert_rejected(_post(client, "/generate", {"prompt": "the ", field: value}), field)

    check()


@given(n=st.integers(5, 300), prompt_chars=st.integers(61, 500), i=st.integers(0, 1))
@FEW
def test_over_long_prompt_text_and_stop_are_rejected(client, n, prompt_chars, i):
    _assert_rejected(_post(client, "/generate", {"prompt": "a" * prompt_chars}), "prompt")
    stop = ["ok", "ok"]
    stop[i] = "s" * n
    _assert_rejected(_post(client, "/generate", {"prompt": "a", "stop": stop}), f"stop.{i}")
    _assert_rejected(_post(client, "/sentiment", {"text": "w " * (60 + n)}), "text")
    _assert_rejected(_post(client, "/attention", {"text": "w" * (120 + n)}), "text")


@given(n=st.integers(4, 200), bad=st.integers(0, 2))
@FEW
def test_too_many_texts_or_one_too_long_is_rejected(client, n, bad):
    _assert_rejected(_post(client, "/sentiment", {"texts": ["fine"] * n}), "texts")
    texts = ["fine", "ok", "good"]
    texts[bad] = "x" * (120 + n)
    _assert_rejected(_post(client, "/sentiment", {"texts": texts}), f"texts.{bad}")


@given(max_new=st.integers(1, 20), temperature=st.floats(0, 10),
       top_k=st.one_of(st.none(), st.integers(1, 10**6)),
       top_p=st.one_of(st.none(), st.floats(1e-9, 1.0, exclude_min=True)),
       seed=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
       stop=st.lists(st.text(min_size=1, max_size=4).filter(lambda s: "\x00" not in s),
                     max_size=2),
       prompt=st.text(min_size=1, max_size=60).filter(lambda s: "\x00" not in s))
@FEW
def test_every_in_range_generation_request_is_served(client, max_new, temperature, top_k,
                                                     top_p, seed, stop, prompt):
    r = _post(client, "/generate", {"prompt": prompt, "max_new_chars": max_new,
                                    "temperature": temperature, "top_k": top_k,
                                    "top_p": top_p, "seed": seed, "stop": stop})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["generated_chars"] == len(out["text"]) <= max_new
    assert not any(s in out["text"] for s in stop)


@given(text=st.text(min_size=1, max_size=120).filter(lambda s: s.strip() and "\x00" not in s))
@FEW
def test_any_non_blank_text_is_classified_with_round_tripping_offsets(client, text):
    r = _post(client, "/attention", {"text": text})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] in ("positive", "negative")
    for t in out["tokens"]:
        assert text[t["start"]:t["end"]].lower() == t["text"]
    r2 = _post(client, "/sentiment", {"text": text})
    assert r2.status_code == 200 and r2.json()["probabilities"] == out["probabilities"]


@given(text=st.text(max_size=50).filter(lambda s: not s.strip() or "\x00" in s))
@FEW
def test_blank_or_nul_text_is_rejected(client, text):
    _assert_rejected(_post(client, "/sentiment", {"text": text}), "text")
    _assert_rejected(_post(client, "/attention", {"text": text}), "text")
