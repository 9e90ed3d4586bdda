"""ERASER faithfulness (seqcore/faithfulness.py): the reduced rows, the measures, the
offline table (training/faithfulness.py) and /attention's ``"faithfulness": true``:
values in [-1, 1], equal to the offline computation through ONNX Runtime, and the
same for a request alone and among others."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from seqcore import faithfulness as faith
from seqcore.tokenizer import WordTokenizer

TEXT = "The plot was thin and the pacing slow, but the acting was superb and I loved it."


def test_top_k_takes_at_least_one_token_and_breaks_ties_by_position():
    assert faith.top_k([0.1, 0.5, 0.2, 0.5], 0.05) == [1]
    assert faith.top_k([0.1, 0.5, 0.2, 0.5], 0.5) == [1, 3]
    assert faith.top_k([0.3] * 10, 0.2) == [0, 1]
    assert faith.top_k([1.0], 0.2) == [0]


def test_reduced_rows_remove_and_keep_the_top_tokens_in_order():
    ids, imp = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [0, 9, 0, 0, 8, 0, 0, 0, 0, 7]
    rows = faith.reduced_rows(ids, imp, (0.1, 0.2, 0.3), unk_id=1)
    assert rows == [[10, 12, 13, 14, 15, 16, 17, 18, 19], [11],
                    [10, 12, 13, 15, 16, 17, 18, 19], [11, 14],
                    [10, 12, 13, 15, 16, 17, 18], [11, 14, 19]]
    # a one-token text loses its only token: read as one <unk>
    assert faith.reduced_rows([5], [1.0], (0.1,), unk_id=1) == [[1], [5]]


def test_scores_are_drops_of_the_predicted_labels_probability():
    # predicted positive at 0.9; without the top tokens 0.3, the top tokens alone 0.8
    (s,) = faith.scores(0.9, [0.3, 0.8], (0.1,))
    assert s["comprehensiveness"] == pytest.approx(0.6) and s["sufficiency"] == pytest.approx(0.1)
    # predicted negative (0.2 positive): the negative label's probability is what drops
    (s,) = faith.scores(0.2, [0.7, 0.1], (0.1,))
    assert s["comprehensiveness"] == pytest.approx(0.5)
    assert s["sufficiency"] == pytest.approx(-0.1)
    assert list(faith.toward_prediction([1.0, -2.0], 0.3)) == [-1.0, 2.0]


def _check_scores(scores: list[dict], names: set[str]) -> None:
    assert {s["explanation"] for s in scores} == names
    assert len(scores) == len(names) * len(faith.KS)
    for s in scores:
        assert s["k"] in faith.KS and s["tokens"] >= 1
        assert -1.0 <= s["comprehensiveness"] <= 1.0
        assert -1.0 <= s["sufficiency"] <= 1.0


def test_attention_faithfulness_is_opt_in_and_matches_the_offline_measure(client, models_dir):
    from training.evaluate import ort_session
    from training.faithfulness import NGRAMS, run_rows

    plain = client.post("/attention", json={"text": TEXT}).json()
    assert "faithfulness" not in plain
    r = client.post("/attention", json={"text": TEXT, "faithfulness": True})
    assert r.status_code == 200, r.text
    body = r.json()
    scores = body["faithfulness"]
    _check_scores(scores, {"attention", "ngrams"})
    # the same answer and explanation as without the option
    assert body["probabilities"] == plain["probabilities"] and body["tokens"] == plain["tokens"]
    # computed offline from the same graph, the same numbers
    folder = models_dir / "sentiment"
    tok = WordTokenizer.load(folder / "vocab.json")
    sess = ort_session(str(folder / "model.onnx"))
    ids = tok.encode(TEXT, offsets=False).ids
    p, att, ng = run_rows(sess, [ids], tok.unk_id, ["probability", "attention", NGRAMS])[0]
    for name, imp in (("attention", att), ("ngrams", faith.toward_prediction(ng, float(p)))):
        rows = faith.reduced_rows(ids, imp, faith.KS, tok.unk_id)
        red = [float(q[0]) for q in run_rows(sess, rows, tok.unk_id, ["probability"])]
        want = faith.scores(float(p), red, faith.KS)
        got = [s for s in scores if s["explanation"] == name]
        for g, w in zip(got, want, strict=True):
            assert g["k"] == w["k"]
            assert g["comprehensiveness"] == pytest.approx(w["comprehensiveness"], abs=1e-5)
            assert g["sufficiency"] == pytest.approx(w["sufficiency"], abs=1e-5)


def test_faithfulness_is_the_same_alone_and_batched_with_other_requests(client):
    alone = client.post("/attention", json={"text": TEXT, "faithfulness": True}).json()
    others = ["Dull and far too long.", "A gem.", "I wanted to like it, I really did. " * 8]

    def post(i: int) -> dict:
        text = TEXT if i % 2 == 0 else others[i % len(others)]
        flag = i % 2 == 0 or i % 3 == 1  # the others with and without the option
        return client.post("/attention", json={"text": text, "faithfulness": flag}).json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(12)))
    for a in answers[::2]:
        for s, t in zip(a["faithfulness"], alone["faithfulness"], strict=True):
            assert s["explanation"] == t["explanation"] and s["k"] == t["k"]
            assert s["comprehensiveness"] == pytest.approx(t["comprehensiveness"], abs=1e-5)
            assert s["sufficiency"] == pytest.approx(t["sufficiency"], abs=1e-5)


def test_a_model_without_an_ngram_term_scores_its_attention_only(tiny_client):
    r = tiny_client.post("/attention", json={"text": "good", "faithfulness": True})
    assert r.status_code == 200, r.text
    _check_scores(r.json()["faithfulness"], {"attention"})
    r = tiny_client.post("/attention", json={"text": "", "faithfulness": True})
    assert r.status_code in (200, 422)  # an empty text is whatever /attention makes of it
    r = tiny_client.post("/attention", json={"text": "good", "faithfulness": "yes"})
    assert r.status_code == 422


def test_the_offline_table_has_every_explanation_and_k(tmp_path: Path, capsys):
    import json

    from tests.training.test_training import _synthetic_imdb
    from training.faithfulness import main

    imdb = _synthetic_imdb(tmp_path / "imdb.tar.gz")
    assert main(["--data", str(imdb), "--model-dir", str(Path(__file__).parents[2] / "models"
                                                          / "sentiment"),
                 "--reviews", "12"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["reviews"] == 12
    assert set(out["explanations"]) == {"attention", "ngrams", "random"}
    for table in out["explanations"].values():
        assert set(table) == {"5%", "10%", "20%"}
        for v in table.values():
            assert -1 <= v["comprehensiveness"] <= 1 and -1 <= v["sufficiency"] <= 1
