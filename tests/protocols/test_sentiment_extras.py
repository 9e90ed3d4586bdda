"""Training extras of the sentiment model: continuing from a served model
(``sentiment_from_graph``, ``--init-from``), negation augmentation kept apart from the
check set, and the wide n-gram term added inside the graph (training/ngrams.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.training.test_training import TINY_SENTIMENT, _synthetic_imdb
from training import augment
from training.augment import MORE_TEMPLATES, TEMPLATES, compose, generate, too_close
from training.evaluate import NEGATION_VAL, load_negation_set
from training.export import build_sentiment_graph, sentiment_from_graph
from training.models import CELLS, SentimentConfig, SentimentLSTM


@pytest.mark.parametrize("cell", CELLS)
def test_a_served_graph_turns_back_into_the_same_torch_model(cell: str):
    torch.manual_seed(0)
    model = SentimentLSTM(SentimentConfig(vocab_size=40, emb_dim=12, hidden=6, cell=cell)).eval()
    back = sentiment_from_graph(build_sentiment_graph(model))
    ids, lens = torch.randint(1, 40, (4, 11)), torch.tensor([11, 5, 1, 8])
    with torch.no_grad():
        (l1, a1), (l2, a2) = model(ids, lens), back(ids, lens)
    assert torch.equal(l1, l2) and torch.equal(a1, a2)
    assert back.cfg.cell == cell


@pytest.mark.parametrize("more", [False, True])
def test_augmentation_is_balanced_distinct_and_never_close_to_the_check_set(more: bool):
    sentences = generate(2000, seed=3, more=more)
    assert len(sentences) == 2000 and len({t for t, _ in sentences}) == 2000
    labels = [y for _, y in sentences]
    assert 0.4 < sum(labels) / len(labels) < 0.6
    check = load_negation_set()
    check_texts = {i["text"].lower() for i in check}
    words = [set(i["text"].lower().replace(".", " ").replace(",", " ").split()) for i in check]
    assert not any(t.lower() in check_texts for t, _ in sentences)
    assert not any(too_close(t, words) for t, _ in sentences)
    assert {label for _, label in TEMPLATES} == {0, 1}
    # the extra frames are drawn only when asked for, and then they are
    import re

    frames = [re.compile(re.sub(r"\\{[a-z_0-9]+\\}", ".+", re.escape(t)))
              for t, _ in MORE_TEMPLATES]

    def from_more(texts) -> int:
        return sum(any(f.fullmatch(t.lower()) for f in frames) for t in texts)

    assert from_more(t for t, _ in sentences) > (200 if more else -1)
    if not more:
        assert from_more(t for t, _ in sentences) == 0
    assert "{" not in " ".join(t for t, _ in sentences)  # every slot filled


def _reference_label(text: str) -> int:
    """A second, independent reading of a composed sentence's label: find the clause
    that decides (after "but", "yet", "still", ...), then its one polar word (from the
    word lists) and count the negators on its surface; an odd count flips the word."""
    t = text.lower().rstrip(".")
    for sep in ("; i'd say ", "; still, ", ", yet ", ", but ", ". then again, "):
        t = t.split(sep)[-1]
    if t.startswith("although "):
        t = t.split(", ", 1)[1]
    for s in sorted(augment.SUBJECTS + augment.G_FILMS, key=len, reverse=True):
        t = re.sub(rf"\b{re.escape(s)}\b", " X ", t)
    sign = {}
    for words, pol in ((augment.POS_ADJ + augment.POS_NOUN + augment.G_POS_FEEL + augment.G_QUAL, 1),
                       (augment.NEG_ADJ + augment.NEG_NOUN + augment.G_NEG_FEEL, -1),
                       ([f for vp in augment.G_POS_VP for f in vp], 1),
                       ([f for vp in augment.G_NEG_VP for f in vp], -1)):
        for w in words:
            sign.setdefault(w, set()).add(pol)
    found = []
    for w in sorted(sign, key=len, reverse=True):  # longest first: "bore me" before "bore"
        pattern = rf"\b{re.escape(w)}\b"
        if re.search(pattern, t):
            found += sign[w]
            t = re.sub(pattern, " _ ", t)
    assert found and len(set(found)) == 1, (text, found)
    negators = len(re.findall(r"\b(?:not|no|never|nothing|nobody|cannot|without|hardly|fail|fails|"
                              r"failed|lacks|stops|far from|anything but|less than|short on)\b"
                              r"|n't\b", t))
    return int(found[0] * (-1) ** negators > 0)


def test_composed_sentences_are_labelled_by_their_counted_negations():
    """Every sentence ``compose`` builds gets the label a reader would give it: the
    deciding clause's polar word, flipped once per negation around it. Checked against
    an independent reading (the surface negators counted), over every kind it builds."""
    import random

    rng = random.Random(7)
    made = [compose(rng) for _ in range(3000)]
    assert all(label == _reference_label(text) for text, label in made), \
        [(t, y) for t, y in made if y != _reference_label(t)][:5]
    texts = " ".join(t.lower() for t, _ in made)
    for phrase in ("that didn't", "failed to", "i can't say", "never fails to", ", but ",
                   "not without", "nobody"):
        assert phrase in texts  # the kinds of negation are all there
    # negations counted, not merely present: sentences with two negators are positive and
    # negative alike, as are those with one
    two = [y for t, y in made if len(re.findall(r"n't\b|\bnot\b|\bnever\b|\bfail", t.lower())) == 2]
    assert len(two) > 100 and 0.3 < sum(two) / len(two) < 0.7


def test_grammar_augmentation_keeps_clear_of_the_check_and_validation_items():
    sentences = generate(3000, seed=5, grammar=True)
    assert len({t for t, _ in sentences}) == 3000
    assert 0.4 < sum(y for _, y in sentences) / 3000 < 0.6
    composed = [t for t, _ in sentences if re.search(r"that (?:didn't|failed to)|never fail", t.lower())]
    assert len(composed) > 100  # frames only compose builds
    held = [set(re.findall(r"[a-z']+", i["text"].lower()))
            for i in load_negation_set() + load_negation_set(NEGATION_VAL)]
    assert not any(too_close(t, held) for t, _ in sentences)
    # without the option the augmentation is what it was (shipped models are made again)
    assert generate(500, seed=5) == generate(500, seed=5, grammar=False)
    assert not any("that didn't" in t.lower() for t, _ in generate(2000, seed=5))


@pytest.mark.parametrize("grammar", [False, True])
def test_training_can_continue_from_a_model_folder_with_augmentation(
        tiny_models_dir: Path, tmp_path: Path, capsys, monkeypatch, grammar: bool):
    from training import train_sentiment
    from training.train_sentiment import main

    drawn: list[list[tuple[str, int]]] = []

    def recording(*args, **kw):
        drawn.append(generate(*args, **kw))
        return drawn[-1]

    monkeypatch.setattr(train_sentiment, "generate", recording)
    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    base = tiny_models_dir / "sentiment"
    out = tmp_path / "ft"
    assert main(["--data", str(arc), "--out", str(out), "--init-from", str(base),
                 "--augment", "40", "--epochs", "1", "--lr", "0.001"]
                + (["--augment-grammar"] if grammar else [])) == 0
    assert (out / "vocab.json").read_text() == (base / "vocab.json").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["init_from"] == str(base)
    assert manifest["training"]["augment"] == 40
    assert manifest["training"]["augment_grammar"] is grammar
    assert "negation augmentation: 40 sentences" in capsys.readouterr().out
    (sentences,) = drawn  # what trained: the composed sentences with the option only
    assert sentences == generate(40, 1234, grammar=grammar)
    assert generate(40, 1234, grammar=True) != generate(40, 1234)


def test_a_model_without_ngrams_answers_attention_without_them(tiny_client):
    r = tiny_client.post("/attention", json={"text": "a good film"}).json()
    assert "ngrams" not in r and "ngram_logit" not in r


def test_the_ngram_term_is_added_inside_the_graph_and_served(tiny_models_dir: Path,
                                                            tmp_path: Path, make_client):
    from training.ngrams import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    models = tmp_path / "models"
    out = models / "sentiment"
    assert main(["--base", str(tiny_models_dir / "sentiment"), "--data", str(arc), "--out",
                 str(out), "--buckets", "4096", "--epochs", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ngram"]["buckets"] == 4096
    checks = manifest["export_checks"]["ngram"]
    assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    graph = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "lengths"]  # unchanged
    assert [o.name for o in graph.graph.output] == ["probability", "attention",
                                                    "ngram_contributions"]
    # the service runs it as it is: same inputs, its two outputs
    import shutil

    shutil.copytree(tiny_models_dir / "chargen", models / "chargen")
    client = make_client(models)
    alone = client.post("/sentiment", json={"text": "good movie, great plot"}).json()
    batch = client.post("/sentiment", json={"texts": ["bad", "good movie, great plot"]}).json()
    assert abs(alone["probabilities"]["positive"]
               - batch["results"][1]["probabilities"]["positive"]) <= 1e-5
    # /attention says what its weights do not cover: the n-gram part of the logit, and
    # each token's share of it, with the n-gram's text as written
    text = "Good movie, great plot!"
    r = client.post("/attention", json={"text": text}).json()
    assert len(r["ngrams"]) == len(r["tokens"]) == 5
    assert sum(g["contribution"] for g in r["ngrams"]) == pytest.approx(r["ngram_logit"], abs=1e-5)
    for g in r["ngrams"]:
        assert text[g["start"]:g["end"]] == g["text"]
    assert abs(r["ngrams"][0]["contribution"]) >= abs(r["ngrams"][-1]["contribution"])
    # trained with the default negation scope: the manifest says so, /attention flags
    # each n-gram (this tiny vocabulary has no negator: none is negated)
    assert manifest["ngram"]["negation"]["window"] == 5
    assert [g["negated"] for g in r["ngrams"]] == [False] * 5
    card = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "sentiment")
    assert card["ngram_term"] is True and card["cell"] == "lstm"
    # the per-token contributions sum to the n-gram part of the logit
    from training.evaluate import ort_session

    sess = ort_session(str(out / "model.onnx"))
    ids = np.array([[3, 4, 5, 6]], dtype=np.int64)
    p, _, contrib = sess.run(None, {"input_ids": ids, "lengths": np.array([4])})
    base = ort_session(str(tiny_models_dir / "sentiment" / "model.onnx"))
    p0, _ = base.run(None, {"input_ids": ids, "lengths": np.array([4])})
    ng = manifest["ngram"]
    enc = np.log(p0) - np.log1p(-p0)
    total = ng["encoder_scale"] * enc + contrib.sum(1) + ng["bias"]
    assert np.allclose(1 / (1 + np.exp(-total)), p, atol=1e-5)


def test_ngrams_in_a_negators_scope_take_their_own_buckets_in_torch_and_in_the_graph(
        tiny_models_dir: Path):
    """"bad" after "not" (within the window) is hashed apart from "bad" alone; the
    graph computes the same buckets as the torch formula it was trained with, and a row
    alone equals the row in a padded batch."""
    from seqcore.tokenizer import WordTokenizer
    from training.ngrams import (
        add_ngram_term,
        check_ngram_graph,
        negator_table,
        ngram_buckets,
    )

    tok = WordTokenizer.load(tiny_models_dir / "sentiment" / "vocab.json")
    table = negator_table(tok.itos)
    assert table[:2].tolist() == [0, 0]  # padding and <unk> never negate
    assert negator_table(["<pad>", "<unk>", "not", "didn't", "bad", "nothing"]).tolist() == \
        [0, 0, 1, 1, 0, 1]
    # "failed to impress", "lacks charm": negators only when asked for
    assert negator_table(["<pad>", "failed", "lacks", "film"]).tolist() == [0, 0, 0, 0]
    assert negator_table(["<pad>", "failed", "lacks", "film"], implicit=True).tolist() == \
        [0, 1, 1, 0]
    table = np.zeros(tok.vocab_size, dtype=np.int64)
    table[2::4] = 1  # every 4th id a negator: the random batch below meets plenty
    neg, bad, x = 2, 3, 5
    t = torch.from_numpy(table)

    def buckets(ids: list[int], window: int = 3):
        h, _ = ngram_buckets(torch.tensor([ids]), torch.tensor([len(ids)]), 4096, t, window)
        return h[:, 0, -1].tolist()  # uni/bi/tri buckets ending at the last word

    plain = buckets([x, x, x, x, bad])
    assert buckets([neg, bad])[0] != plain[0]  # "not bad": its own unigram bucket
    assert buckets([neg, x, x, bad])[0] != plain[0]  # three words on: still in scope
    assert buckets([neg, x, x, x, bad]) == plain  # four words on: out of scope
    assert buckets([neg, bad], window=0)[0] == plain[0]  # window 0: off, as before
    # parity: two negators cancel ("wasn't a moment i didn't like"), one or three do not
    h2, _ = ngram_buckets(torch.tensor([[neg, x, neg, bad]]), torch.tensor([4]), 4096, t, 3,
                          parity=True)
    h1, _ = ngram_buckets(torch.tensor([[x, x, neg, bad]]), torch.tensor([4]), 4096, t, 3,
                          parity=True)
    assert h2[0, 0, -1] == plain[0] and h1[0, 0, -1] != plain[0]

    base = onnx.load(str(tiny_models_dir / "sentiment" / "model.onnx"))
    w = (np.random.default_rng(0).normal(size=4096) * 0.3).astype(np.float16)
    m = add_ngram_term(base, w, 0.7, 0.1, table, 3)
    checks = check_ngram_graph(m, base, w, 0.7, 0.1, tok.vocab_size, table, 3)
    assert checks["ngram_vs_torch_max_abs_diff"] <= 1e-4
    assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    mp = add_ngram_term(base, w, 0.7, 0.1, table, 3, parity=True)
    checks = check_ngram_graph(mp, base, w, 0.7, 0.1, tok.vocab_size, table, 3, parity=True)
    assert checks["ngram_vs_torch_max_abs_diff"] <= 1e-4
    assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    # and the scope changes the answer: the same graph without it differs
    off = add_ngram_term(base, w, 0.7, 0.1)
    from training.evaluate import ort_session

    ids = np.array([[neg, bad, x, 7]], dtype=np.int64)
    feed = {"input_ids": ids, "lengths": np.array([4])}
    assert not np.allclose(ort_session(m.SerializeToString()).run(None, feed)[2],
                           ort_session(off.SerializeToString()).run(None, feed)[2])


def test_a_first_word_scope_reads_each_ngram_from_the_word_it_starts_at(tiny_models_dir: Path):
    """With ``first_word`` the bi- and trigram ending at a word take the scope of the word
    they start at: "not bad" as a bigram is not in "not"'s scope (nothing negates
    "not"), and after an outer negator "didn't work" is. The graph computes the same
    buckets, and its export check catches a graph built the other way."""
    from training.evaluate import ort_session
    from training.export import ExportCheckError
    from training.ngrams import add_ngram_term, check_ngram_graph, ngram_buckets

    table = np.zeros(40, dtype=np.int64)
    table[2::4] = 1
    t = torch.from_numpy(table)
    neg, bad, x = 2, 3, 5

    def buckets(ids: list[int], first_word: bool, window: int = 3, parity: bool = False):
        h, _ = ngram_buckets(torch.tensor([ids]), torch.tensor([len(ids)]), 4096, t, window,
                             parity, first_word)
        return h[:, 0, -1].tolist()  # uni/bi/tri buckets ending at the last word

    unscoped = buckets([x, x, neg, bad], True, window=0)
    first, last = buckets([x, x, neg, bad], True), buckets([x, x, neg, bad], False)
    assert first[0] == last[0] != unscoped[0]  # the unigram "bad": in scope either way
    assert first[1:] == unscoped[1:]  # "not bad", "x not bad": start before any negator
    assert last[1] != unscoped[1] and last[2] != unscoped[2]
    # an outer negator: "neg x neg bad" with parity. The word "bad" has two negators
    # before it (cancelled); the bigram "neg bad" starts after one (in scope)
    first = buckets([neg, x, neg, bad], True, parity=True)
    plain = buckets([neg, x, neg, bad], True, window=0)
    assert first[0] == plain[0] and first[1] != plain[1] and first[2] != plain[2]
    assert buckets([neg, x, neg, bad], False, parity=True) == plain

    base = onnx.load(str(tiny_models_dir / "sentiment" / "model.onnx"))
    vocab = json.loads((tiny_models_dir / "sentiment" / "vocab.json").read_text())
    table = np.zeros(len(vocab["itos"]), dtype=np.int64)
    table[2::4] = 1
    w = (np.random.default_rng(0).normal(size=4096) * 0.3).astype(np.float16)
    for parity in (False, True):
        m = add_ngram_term(base, w, 0.7, 0.1, table, 3, parity, first_word=True)
        checks = check_ngram_graph(m, base, w, 0.7, 0.1, len(table), table, 3, parity, True)
        assert checks["ngram_vs_torch_max_abs_diff"] <= 1e-4
        assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    other = add_ngram_term(base, w, 0.7, 0.1, table, 3, True, first_word=False)
    with pytest.raises(ExportCheckError):
        check_ngram_graph(other, base, w, 0.7, 0.1, len(table), table, 3, True, True)
    feed = {"input_ids": np.array([[neg, x, neg, bad]]), "lengths": np.array([4])}
    assert not np.allclose(ort_session(m.SerializeToString()).run(None, feed)[2],
                           ort_session(other.SerializeToString()).run(None, feed)[2])


def test_ngrams_before_a_contrast_word_take_their_own_buckets_in_torch_and_the_graph(
        tiny_models_dir: Path):
    """"boring" in "boring but good" is hashed apart from "boring" alone; "good" after
    the "but" is not; the graph agrees with torch with both scopes on, and its export
    check catches a graph built without the contrast scope."""
    from training.export import ExportCheckError
    from training.ngrams import (
        add_ngram_term,
        check_ngram_graph,
        contrast_table,
        ngram_buckets,
    )

    assert contrast_table(["<pad>", "<unk>", "but", "good", "though"]).tolist() == \
        [0, 0, 1, 0, 1]
    con = torch.zeros(40, dtype=torch.long)
    con[7] = 1
    but, boring, good, x = 7, 3, 5, 9

    def buckets(ids: list[int], window: int = 2):
        h, _ = ngram_buckets(torch.tensor([ids]), torch.tensor([len(ids)]), 4096,
                             con_table=con, con_window=window)
        return h[:, 0].tolist()  # [order][position]

    plain = buckets([boring, but, good], window=0)
    scoped = buckets([boring, but, good])
    assert scoped[0][0] != plain[0][0]  # "boring", one word before "but"
    assert scoped[0][2] == plain[0][2]  # "good" after it: as usual
    assert [o[1] for o in scoped] == [o[1] for o in plain]  # "but" itself: nothing after
    assert buckets([boring, x, x, but, good])[0][0] == plain[0][0]  # three words back: out

    base = onnx.load(str(tiny_models_dir / "sentiment" / "model.onnx"))
    vocab_size = len(json.loads((tiny_models_dir / "sentiment" / "vocab.json").read_text())["itos"])
    neg = np.zeros(vocab_size, dtype=np.int64)
    neg[2::4] = 1
    con = np.zeros(vocab_size, dtype=np.int64)
    con[3::7] = 1
    w = (np.random.default_rng(0).normal(size=4096) * 0.3).astype(np.float16)
    both = {"neg_table": neg, "window": 3, "parity": True, "first_word": True,
            "con_table": con, "con_window": 4}
    m = add_ngram_term(base, w, 0.7, 0.1, **both)
    checks = check_ngram_graph(m, base, w, 0.7, 0.1, vocab_size, **both)
    assert checks["ngram_vs_torch_max_abs_diff"] <= 1e-4
    assert checks["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    without = add_ngram_term(base, w, 0.7, 0.1, **{**both, "con_window": 0})
    with pytest.raises(ExportCheckError):
        check_ngram_graph(without, base, w, 0.7, 0.1, vocab_size, **both)


def test_attention_marks_ngrams_before_a_contrast_word_as_the_trained_buckets():
    from seqcore.tasks.classification import ContrastScope, ngram_answer
    from seqcore.tokenizer import WordTokenizer
    from training.ngrams import contrast_table, ngram_buckets

    itos = ["<pad>", "<unk>", "but", "boring", "though", "good", "film", "yet", "a"]
    tok = WordTokenizer(itos)
    table = torch.from_numpy(contrast_table(itos))
    scope = ContrastScope(frozenset(i for i, f in enumerate(table.tolist()) if f), 3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        text = " ".join(rng.choice(itos[2:], rng.integers(1, 12)))
        e = tok.encode(text)
        ids, n = torch.tensor([e.ids]), torch.tensor([len(e.ids)])
        scoped, _ = ngram_buckets(ids, n, 4096, con_table=table, con_window=3)
        plain, _ = ngram_buckets(ids, n, 4096)
        grams = sorted(ngram_answer(text, e, [0.0] * len(e.ids), contrast=scope)["ngrams"],
                       key=lambda g: g["end"])
        assert [g["before_contrast"] for g in grams] == \
            [bool(scoped[0, 0, k] != plain[0, 0, k]) for k in range(len(grams))], text
        assert all("negated" not in g for g in grams)


@pytest.mark.parametrize("parity", [False, True])
@pytest.mark.parametrize("first_word", [False, True])
def test_attention_marks_negated_ngrams_exactly_as_the_trained_buckets(parity: bool,
                                                                      first_word: bool):
    """/attention's ``negated_orders`` agrees with the buckets the n-grams were trained
    in, order by order, on random texts full of negators."""
    from seqcore.tasks.classification import NegationScope, ngram_answer
    from seqcore.tokenizer import WordTokenizer
    from training.ngrams import negator_table, ngram_buckets

    itos = ["<pad>", "<unk>", "not", "bad", "never", "good", "film", "a", "didn't", "work"]
    tok = WordTokenizer(itos)
    table = torch.from_numpy(negator_table(itos))
    scope = NegationScope(frozenset(i for i, f in enumerate(table.tolist()) if f), 4, parity,
                          first_word)
    rng = np.random.default_rng(0)
    for _ in range(30):
        text = " ".join(rng.choice(itos[2:], rng.integers(1, 14)))
        e = tok.encode(text)
        ids, n = torch.tensor([e.ids]), torch.tensor([len(e.ids)])
        scoped, valid = ngram_buckets(ids, n, 4096, table, 4, parity, first_word)
        plain, _ = ngram_buckets(ids, n, 4096, table, 0)
        grams = sorted(ngram_answer(text, e, [0.0] * len(e.ids), scope)["ngrams"],
                       key=lambda g: g["end"])
        for k, g in enumerate(grams):
            moved = [bool(valid[o, 0, k] and scoped[o, 0, k] != plain[o, 0, k])
                     for o in range(3)]
            assert g["negated_orders"] == moved, (text, k)
            assert g["negated"] == any(moved)


def test_attention_flags_the_ngrams_read_as_negated_exactly_where_the_graph_does():
    from seqcore.tasks.classification import NegationScope, ngram_answer
    from seqcore.tokenizer import WordTokenizer

    tok = WordTokenizer(["<pad>", "<unk>", "not", "bad", "at", "all", "good", "film", "a"])
    text = "Not bad at all, a good film"
    e = tok.encode(text)
    negation = NegationScope(frozenset({tok.stoi["not"]}), 3, False)
    grams = ngram_answer(text, e, [0.1] * len(e.ids), negation)["ngrams"]
    flags = {text[g["end"] - len(t):g["end"]]: g["negated"]
             for g, t in zip(sorted(grams, key=lambda g: g["end"]),
                             ["not", "bad", "at", "all", "a", "good", "film"], strict=True)}
    assert flags == {"Not": False, "bad": True, "at": True, "all": True, "a": False,
                     "good": False, "film": False}
    assert all("negated" not in g for g in ngram_answer(text, e, [0.1] * len(e.ids))["ngrams"])
    # parity: "not ... not" cancels
    text = "not good not bad"
    e = tok.encode(text)
    grams = ngram_answer(text, e, [0.1] * 4, NegationScope(negation[0], 3, True))["ngrams"]
    assert [g["negated"] for g in sorted(grams, key=lambda g: g["end"])] == \
        [False, True, True, False]


def _scoped_model(window: int = 3, vocab: int = 40) -> tuple[SentimentLSTM, list[str]]:
    """A tiny model whose encoder reads a negator's scope, the scope vectors random (a
    trained model's are not zero; a zero one would hide a wrong export)."""
    from training.models import negator_table

    itos = ["<pad>", "<unk>", "not", "bad", "didn't", "good"] + [f"w{i}" for i in range(vocab - 6)]
    torch.manual_seed(3)
    model = SentimentLSTM(SentimentConfig(vocab_size=vocab, emb_dim=12, hidden=6,
                                          negation_window=window))
    model.set_negators(negator_table(itos))
    with torch.no_grad():
        model.neg_embedding.weight.normal_()
        model.neg_embedding.weight[0] = 0.0  # out of scope: the plain embedding
    return model.eval(), itos


def test_the_encoder_reads_a_negators_scope_in_torch_and_in_the_graph():
    from training.export import check_sentiment
    from training.models import negation_scope

    model, _ = _scoped_model(window=3)
    ids = torch.tensor([[5, 2, 7, 3, 8, 9, 10, 3], [4, 7, 7, 7, 7, 3, 0, 0], [3, 8, 9, 3, 0, 0, 0, 0]])
    lens = torch.tensor([8, 6, 4])
    # "not" at 1 covers 2..4; "didn't" at 0 covers 1..3; no negator in the third row
    assert negation_scope(ids, model.neg_table, 3).tolist()[:2] == [
        [0, 0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0]]
    graph = build_sentiment_graph(model)
    sess = runtime_session(graph)
    with torch.no_grad():
        logit, attn = model(ids, lens)
        no_scope = SentimentLSTM(model.cfg.__class__(**{**model.cfg.__dict__, "negation_window": 0}))
        no_scope.load_state_dict(model.state_dict(), strict=False)
        plain, _ = no_scope.eval()(ids, lens)
    p, a = sess.run(None, {"input_ids": ids.numpy(), "lengths": lens.numpy()})
    np.testing.assert_allclose(p, torch.sigmoid(logit).numpy(), atol=1e-6)
    np.testing.assert_allclose(a, attn.numpy(), atol=1e-6)
    # the scope changes the rows with a negator and only those
    assert abs(float(logit[0] - plain[0])) > 1e-4 and abs(float(logit[1] - plain[1])) > 1e-4
    assert float(logit[2]) == pytest.approx(float(plain[2]), abs=1e-6)
    # the export checks (torch vs ORT, a row alone vs in a padded batch) hold
    assert check_sentiment(model, graph)["row_alone_vs_batch_max_abs_diff"] <= 1e-5
    for b, n in enumerate(lens.tolist()):
        p1, _ = sess.run(None, {"input_ids": ids[b:b + 1, :n].numpy(), "lengths": lens[b:b + 1].numpy()})
        assert abs(float(p1[0]) - float(p[b])) <= 1e-6
    # and the served graph turns back into the same torch model, scope included
    back = sentiment_from_graph(graph)
    assert back.cfg.negation_window == 3
    with torch.no_grad():
        assert torch.equal(back(ids, lens)[0], logit)


def test_the_direction_cut_keeps_the_encoder_negation_scope():
    from seqcore import runtime, split

    model, _ = _scoped_model(window=5, vocab=60)
    graph = build_sentiment_graph(model).SerializeToString()
    whole = runtime.session(graph, threads=1)
    cut = split.DirectionSplit(split.cut_directions(graph),
                               lambda g: runtime.session(g, threads=1))
    rng = np.random.default_rng(0)
    rows = [rng.integers(2, 60, size=n).tolist() for n in (9, 30, 1, 17)]
    rows[1][3] = rows[3][0] = 2  # a negator in two of the rows
    ids, lens = runtime.pad_rows(rows, 1)
    feed = {"input_ids": ids, "lengths": lens}
    names = [o.name for o in whole.get_outputs()]
    for w_, c_ in zip(whole.run(names, feed), cut.run(names, feed), strict=True):
        np.testing.assert_array_equal(w_, c_)


def test_a_negation_scope_can_be_added_to_a_trained_model(tiny_models_dir: Path, tmp_path: Path):
    """``--init-from`` a model without a scope and ``--encoder-negation-window``: the
    scope starts at zero (the model's answers unchanged), is trained, exported and
    served by the same runtime code."""
    from seqcore.tasks import load_model
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    base = tiny_models_dir / "sentiment"
    out = tmp_path / "ft-scope"
    assert main(["--data", str(arc), "--out", str(out), "--init-from", str(base),
                 "--augment", "40", "--epochs", "1", "--lr", "0.001",
                 "--encoder-negation-window", "4", "--no-test"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["encoder_negation_window"] == 4
    assert "negation scope 4 words" in manifest["architecture"]
    trained = sentiment_from_graph(onnx.load(str(out / "model.onnx")))
    assert trained.cfg.negation_window == 4
    from seqcore.tokenizer import WordTokenizer
    from training.models import negator_table

    itos = WordTokenizer.load(out / "vocab.json").itos
    assert trained.neg_table.tolist() == negator_table(itos).tolist()
    assert float(trained.neg_embedding.weight.detach().abs().sum()) > 0  # it learned
    served = load_model(out)
    row = served.encode("it was not bad at all")
    assert served.probe(*runtime_pad([row.ids]))[0] == pytest.approx(
        float(torch.sigmoid(trained(*map(torch.from_numpy, runtime_pad([row.ids])))[0][0])),
        abs=1e-5)


def runtime_session(graph: onnx.ModelProto):
    from seqcore import runtime

    return runtime.session(graph.SerializeToString(), threads=1)


def runtime_pad(rows: list[list[int]]):
    from seqcore import runtime

    return runtime.pad_rows(rows, 1)


def test_stacking_offsets_come_from_models_that_never_saw_the_row():
    """Each training row's n-gram offset comes from the folds without it: rows whose only
    evidence is an id of their own (random labels) are fitted in sample, not out of fold."""
    from training.ngrams import NgramConfig, _ngram_logits, fit_ngrams, out_of_fold_logits

    rng = np.random.default_rng(0)
    n = 200
    x = [[10 + i, int(rng.integers(2, 6))] for i in range(n)]  # own id + a shared filler
    y = [int(v) for v in rng.integers(0, 2, n)]
    va_x, va_y = x[:20], y[:20]
    cfg = NgramConfig(buckets=1 << 12, epochs=4, lr=0.2, weight_decay=0.0, negation_window=0,
                      batch_size=16)
    w, _, _, bias = fit_ngrams(cfg, x, y, va_x, va_y, with_bias=True)
    in_sample = float(((_ngram_logits(w, bias, x, None, 0, False) > 0) == np.array(y, bool)).mean())
    extra_x, extra_y = [[3, 4]] * 10, [1] * 10  # joins every fold's fit, gets no offset
    tr_off, va_off = out_of_fold_logits(x, y, va_x, va_y, 4, None, cfg, say=lambda m: None,
                                        extra_x=extra_x, extra_y=extra_y)
    oof = float(((tr_off > 0) == np.array(y, bool)).mean())
    assert in_sample > 0.95  # the own ids memorise the labels...
    assert oof < 0.7  # ...and a model that never saw the row cannot
    assert tr_off.shape == (n,) and va_off.shape == (20,)
    assert np.all(np.isfinite(tr_off)) and np.all(np.isfinite(va_off))


def test_an_encoder_trains_as_a_residual_to_fold_ngrams_and_exports_alone(tmp_path: Path):
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    out = tmp_path / "stacked"
    assert main(["--data", str(arc), "--out", str(out), *TINY_SENTIMENT, "--epochs", "6",
                 "--patience", "6", "--w2v-epochs", "0", "--stack-ngrams", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["stack_ngrams"] == 3
    assert 0.5 < manifest["metrics"]["val_accuracy_with_fold_ngrams"] <= 1.0
    assert "ngram" not in manifest  # the graph is the encoder alone
    graph = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["probability", "attention"]
    # a stacked encoder is the base of an n-gram term as any other encoder
    from training.ngrams import main as ngrams_main

    assert ngrams_main(["--base", str(out), "--data", str(arc), "--out", str(tmp_path / "ng"),
                        "--buckets", "4096", "--epochs", "2", "--no-test"]) == 0


@pytest.mark.parametrize("where", ["folds", "alone"])
def test_augmentation_rows_get_fold_offsets_or_none(where: str, tmp_path: Path, monkeypatch):
    import training.train_sentiment as ts

    seen = {}
    real = ts.train_model

    def spy(*args, **kwargs):
        seen["offsets"], seen["rows"] = args[-1], len(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "train_model", spy)
    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    assert ts.main(["--data", str(arc), "--out", str(tmp_path / "o"), "--epochs", "1",
                    "--emb-dim", "8", "--hidden", "8", "--w2v-epochs", "0", "--max-len", "24",
                    "--head-len", "8", "--augment", "30", "--stack-ngrams", "2",
                    "--stack-augmentation", where, "--no-test"]) == 0
    tr_off, va_off = seen["offsets"]
    assert len(tr_off) == seen["rows"] == 144 + 30  # 90 % of 160 reviews, then 30 sentences
    assert np.count_nonzero(tr_off[:144]) == 144
    if where == "alone":
        assert np.all(tr_off[-30:] == 0.0)
    else:
        assert np.count_nonzero(tr_off[-30:]) == 30
    assert len(va_off) == 16 and np.count_nonzero(va_off) == 16


def test_fold_ngram_models_can_copy_the_settings_of_a_served_term(
        tiny_models_dir: Path, tmp_path: Path, monkeypatch, capsys):
    import training.train_sentiment as ts
    from training.ngrams import main as ngrams_main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    term = tmp_path / "with-term"
    assert ngrams_main(["--base", str(tiny_models_dir / "sentiment"), "--data", str(arc),
                        "--out", str(term), "--buckets", "4096", "--epochs", "1",
                        "--negation-parity", "--negation-first-word", "--contrast-window", "3",
                        "--no-test"]) == 0
    seen = {}
    real = ts.out_of_fold_logits

    def spy(*args, **kwargs):
        seen["cfg"] = args[6]
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "out_of_fold_logits", spy)
    common = ["--data", str(arc), "--epochs", "1", "--emb-dim", "8", "--hidden", "8",
              "--w2v-epochs", "0", "--max-len", "24", "--head-len", "8", "--stack-ngrams", "2",
              "--no-test"]
    assert ts.main([*common, "--out", str(tmp_path / "a"), "--stack-like", str(term)]) == 0
    cfg = seen["cfg"]
    assert (cfg.buckets, cfg.epochs, cfg.negation_parity, cfg.negation_first_word,
            cfg.contrast_window) == (4096, 1, True, True, 3)
    assert ts.main([*common, "--out", str(tmp_path / "b")]) == 0  # the defaults otherwise
    assert (seen["cfg"].buckets, seen["cfg"].contrast_window) == (2**21, 0)
    # a model without an n-gram term has no settings to copy: refused before any work
    assert ts.main([*common, "--out", str(tmp_path / "c"), "--stack-like",
                    str(tiny_models_dir / "sentiment")]) != 0
    assert "no n-gram term" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_one_stacking_fold_is_refused_before_any_work(tmp_path: Path, capsys):
    from training.train_sentiment import main

    assert main(["--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "o"),
                 "--stack-ngrams", "1"]) != 0
    assert "at least 2 folds" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "o"),
                 "--max-len", "24"]) != 0  # the default head (200 tokens) does not fit
    assert "--head-len 200 is longer than --max-len 24" in capsys.readouterr().err


def test_training_continues_from_the_encoder_of_a_model_with_an_ngram_term(
        tiny_models_dir: Path, tmp_path: Path):
    from training.ngrams import main as ngrams_main
    from training.train_sentiment import main

    arc = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    wide = tmp_path / "wide"
    assert ngrams_main(["--base", str(tiny_models_dir / "sentiment"), "--data", str(arc),
                        "--out", str(wide), "--buckets", "4096", "--epochs", "1",
                        "--no-test"]) == 0
    base = sentiment_from_graph(onnx.load(str(tiny_models_dir / "sentiment" / "model.onnx")))
    again = sentiment_from_graph(onnx.load(str(wide / "model.onnx")))
    for (k, a), (_, b) in zip(base.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # the wide graph still holds the encoder, unchanged
    out = tmp_path / "ft"
    assert main(["--data", str(arc), "--out", str(out), "--init-from", str(wide),
                 "--epochs", "1", "--no-test"]) == 0
    assert "ngram" not in json.loads((out / "manifest.json").read_text())


def test_the_scopes_are_recorded_and_served(tiny_models_dir: Path, tmp_path: Path,
                                                   make_client):
    import shutil

    from training.ngrams import CONTRASTS, main

    models = tmp_path / "models"
    assert main(["--base", str(tiny_models_dir / "sentiment"), "--data",
                 str(_synthetic_imdb(tmp_path / "imdb.tar.gz")), "--out",
                 str(models / "sentiment"), "--buckets", "4096", "--epochs", "1",
                 "--negation-parity", "--negation-first-word", "--implicit-negators",
                 "--contrast-window", "4", "--no-test"]) == 0
    manifest = json.loads((models / "sentiment" / "manifest.json").read_text())
    assert manifest["ngram"]["negation"]["scope_from"] == "first_word"
    assert manifest["ngram"]["negation"]["parity"] is True
    assert manifest["ngram"]["contrast"]["window"] == 4
    vocab = json.loads((models / "sentiment" / "vocab.json").read_text())["itos"]
    assert set(manifest["ngram"]["contrast"]["words"]) == CONTRASTS & set(vocab)
    shutil.copytree(tiny_models_dir / "chargen", models / "chargen")
    r = make_client(models).post("/attention", json={"text": "a good film"}).json()
    assert [g["negated_orders"] for g in r["ngrams"]] == [[False] * 3] * 3
    assert [g["before_contrast"] for g in r["ngrams"]] == [False] * 3
