"""The app starts on tiny models and answers each endpoint (quality-independent)."""


def test_tiny_app_answers_every_endpoint(tiny_client):
    assert tiny_client.get("/readyz").status_code == 200
    r = tiny_client.post("/sentiment", json={"text": "a good movie"})
    assert r.status_code == 200 and r.json()["label"] in ("positive", "negative")
    r = tiny_client.post("/generate", json={"prompt": "the ", "max_new_chars": 5, "seed": 3})
    assert r.status_code == 200 and r.json()["generated_chars"] == 5
