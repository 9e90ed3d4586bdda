"""The web page in a real browser: Playwright driving Debian's chromium against a real
``python -m app`` on loopback (bench/server.py's launcher).

Covers what issue #11 asks of the page: no request leaves loopback (on /, /docs,
/redoc); the heatmap's tokens equal /attention's (count, order, offsets, weights to
1e-3) and darker means heavier; streamed output grows as it arrives and equals the
non-streamed text for the same seed; Stop frees the stream's slot (the active-streams
gauge returns to 0); batch rows equal /sentiment's; API errors, a network failure and a
wrong key show in the error banner; the layout at 360 px has no horizontal scroll;
the page works from the keyboard.

Playwright's own browser download cannot work offline, so the tests launch
``/usr/bin/chromium`` (``apt-get install chromium``; SEQSERVE_CHROMIUM overrides).
Without it, or without the playwright package, the tests skip, unless
SEQSERVE_BROWSER_TESTS=required (``make test-web``, which CI runs): then they fail.

Screenshots go to SEQSERVE_SCREENSHOTS (default: a "seqserve-screenshots" folder in
the system's temporary folder); the README shows two of them, copied to
docs/screenshots/ (sentiment.png, generate.png).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bench.server import ServerProcess

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SEQSERVE_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("SEQSERVE_BROWSER_TESTS", "").lower() == "required"
SHOTS = Path(os.environ.get("SEQSERVE_SCREENSHOTS",
                            Path(tempfile.gettempdir()) / "seqserve-screenshots"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
TIMEOUT_MS = 30_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    why = _missing()
    if why:
        if REQUIRED:
            pytest.fail(f"browser tests required (SEQSERVE_BROWSER_TESTS=required) but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[ServerProcess]:
    """The committed models (real weights: the screenshots show a real heatmap), with
    room for a generation long enough to be stopped half-way."""
    with ServerProcess(models_dir, max_new_chars=20_000, ready_timeout_s=120) as s:
        yield s


@pytest.fixture(scope="module")
def keyed_server(tiny_models_dir: Path) -> Iterator[ServerProcess]:
    # protect_ops: /v1/models and /v1/stats want the key too; the page's files do not
    with ServerProcess(tiny_models_dir, api_key="right-key", protect_ops=True,
                       ready_timeout_s=120) as s:
        yield s


class Visits:
    """Every request the page makes. Requests off loopback are recorded and aborted
    (so a test never waits on the internet); loopback answers of 400 or more are
    recorded too (a missing asset)."""

    def __init__(self, context) -> None:
        self.offsite: list[str] = []
        self.local_errors: list[str] = []
        self.requests: list = []
        context.route("**/*", self._route)
        context.on("request", lambda r: self.requests.append(r))
        context.on("response", self._response)

    def _route(self, route, request) -> None:
        if self._local(request.url):
            route.continue_()
        else:
            self.offsite.append(request.url)
            route.abort()

    @staticmethod
    def _local(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK

    def _response(self, response) -> None:
        if response.status >= 400 and self._local(response.url):
            self.local_errors.append(f"{response.status} {response.url}")

    def all_urls(self) -> list[str]:
        return [r.url for r in self.requests]


@pytest.fixture
def open_page(browser) -> Iterator[Callable[..., tuple]]:
    """open_page(server, width=1100) -> (page, visits): a fresh browser context (no
    shared sessionStorage or cache) on the server's page."""
    contexts = []

    def factory(srv: ServerProcess, width: int = 1100, height: int = 900, path: str = "/"):
        ctx = browser.new_context(viewport={"width": width, "height": height},
                                  accept_downloads=True)
        contexts.append(ctx)
        visits = Visits(ctx)
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(srv.url + path)
        return page, visits

    yield factory
    for ctx in contexts:
        ctx.close()


def shot(page, name: str, selector: str | None = None, full_page: bool = True) -> Path:
    """A screenshot of the page, or of one element with a margin around it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = SHOTS / f"{name}.png"
    if selector:
        page.locator(selector).scroll_into_view_if_needed()
        box = page.locator(selector).bounding_box()
        assert box is not None
        pad = 12
        sx, sy = page.evaluate("[window.scrollX, window.scrollY]")  # clip: page coordinates
        page.screenshot(path=str(out), full_page=True, clip={
            "x": max(box["x"] + sx - pad, 0), "y": max(box["y"] + sy - pad, 0),
            "width": box["width"] + 2 * pad, "height": box["height"] + 2 * pad})
    else:
        page.screenshot(path=str(out), full_page=full_page)
    return out


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


def active_streams(srv: ServerProcess) -> float:
    text = srv.get("/metrics").text
    return sum(float(m.group(1)) for m in
               re.finditer(r"^seqserve_active_streams(?:\{[^}]*\})? (\S+)$", text, re.M))


def luminance(css: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def wait_for(pred: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def classify(page) -> None:
    page.click(tid("sentiment-submit"))
    page.wait_for_selector(f"#sentiment-result:not([hidden]) {tid('attention-token')}")


# ---------------------------------------------------------------- offline
def test_page_and_docs_make_no_request_off_loopback(server, open_page):
    page, visits = open_page(server)
    page.wait_for_selector(tid("model-card"))
    page.click("[data-example=short]")
    classify(page)
    page.wait_for_selector("#live-table tbody tr td")

    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")  # Swagger UI rendered the operations
    assert page.locator(".swagger-ui .opblock").count() >= 5
    page.goto(server.url + "/redoc")
    page.wait_for_selector("h2:has-text('Classify a text and return the attention weight')")
    shot(page, "redoc", full_page=False)

    urls = visits.all_urls()
    assert any("/static/vendor/swagger-ui" in u for u in urls)
    assert any("/static/vendor/redoc" in u for u in urls)
    assert visits.offsite == [], visits.offsite
    assert all(Visits._local(u) for u in urls), urls
    assert visits.local_errors == [], visits.local_errors


# ---------------------------------------------------------------- sentiment
def test_heatmap_tokens_equal_attention_and_darker_means_heavier(server, open_page):
    page, visits = open_page(server)
    page.click("[data-example=long]")  # longer than the model reads: truncated
    text = page.input_value(tid("sentiment-input"))
    classify(page)
    api = httpx.post(server.url + "/attention", json={"text": text}, timeout=30).json()
    assert api["truncated"] and len(api["tokens"]) > 100

    marks = page.eval_on_selector_all(tid("attention-token"), """els => els.map(e => ({
        weight: Number(e.dataset.weight), start: Number(e.dataset.start),
        end: Number(e.dataset.end), text: e.textContent,
        bg: getComputedStyle(e).backgroundColor}))""")
    assert len(marks) == len(api["tokens"])
    chars = list(text)  # offsets count code points
    for m, t in zip(marks, api["tokens"], strict=True):
        assert (m["start"], m["end"]) == (t["start"], t["end"])
        assert abs(m["weight"] - t["weight"]) <= 1e-3
        assert m["text"] == "".join(chars[t["start"]:t["end"]])
    starts = [m["start"] for m in marks]
    assert starts == sorted(starts)  # reading order

    # darker as the weight rises: luminance never increases along rising weight
    by_weight = sorted(marks, key=lambda m: m["weight"])
    lum = [luminance(m["bg"]) for m in by_weight]
    assert all(b <= a for a, b in zip(lum, lum[1:], strict=False)), "shading not monotone"
    assert lum[-1] < lum[0] - 100  # the heaviest is clearly darker than the lightest

    assert page.get_by_test_id("sentiment-label").inner_text() == api["label"]
    assert page.get_by_test_id("sentiment-score").inner_text() == f"{api['score']:.4f}"
    assert page.is_visible("#truncated-note")
    skipped = page.inner_text("#heatmap .skipped")
    assert len(skipped) > 100  # the middle the model skipped is greyed
    assert api["tokens"][0]["start"] < text.index(skipped.strip()[:40]) < api["tokens"][-1]["start"]

    # the accessible table view has one row per token, with the weight as text
    page.click("#weights-details summary")
    rows = page.locator("#weights-table tbody tr")
    assert rows.count() == len(marks)
    assert rows.nth(0).locator("td").nth(2).inner_text() == f"{api['tokens'][0]['weight']:.4f}"

    # top k: only the k heaviest stay shaded
    page.fill("#topk-k", "5")
    page.check("#topk-on")
    assert page.locator(f"{tid('attention-token')}:not(.off)").count() == 5
    assert page.locator(f"{tid('attention-token')}.off").count() == len(marks) - 5
    assert visits.offsite == []


def test_keyboard_only_classify_and_read_weights(server, open_page):
    page, _ = open_page(server)
    page.focus(tid("sentiment-input"))
    page.keyboard.type("The acting was not bad at all, and the ending was wonderful!")
    page.keyboard.press("Tab")  # the Classify button
    assert page.evaluate("document.activeElement.dataset.testid") == "sentiment-submit"
    page.keyboard.press("Enter")
    page.wait_for_selector(tid("attention-token"))
    for _ in range(30):  # Tab on through the controls to the heatmap's one tab stop
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "MARK":
            break
    assert page.evaluate("document.activeElement.dataset.testid") == "attention-token"
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("({w: document.activeElement.dataset.weight,"
                            " i: document.activeElement.dataset.index})")
    assert focused["i"] == "1"
    assert f"weight {float(focused['w']):.4f}" in page.inner_text("#token-info")
    page.click("[data-example=negated]")
    classify(page)
    # the n-gram table says which n-grams the model read in a negator's scope ("good"
    # in "it is not good": the word; "not good" starts at the negator: not the bigram)
    grams = page.locator("#ngram-table tbody td:first-child").all_inner_texts()
    assert any("(negated: word" in g for g in grams), grams
    shot(page, "sentiment", "#sentiment")


def test_faithfulness_is_shown_beside_the_heatmap(server, open_page):
    page, _ = open_page(server)
    page.click("[data-example=short]")
    text = page.input_value(tid("sentiment-input"))
    assert page.is_checked(tid("faithfulness-on"))  # asked for by default
    classify(page)
    api = httpx.post(server.url + "/attention", json={"text": text, "faithfulness": True},
                     timeout=30).json()
    rows = page.locator(f"{tid('faithfulness')} tbody tr")
    assert rows.count() == len(api["faithfulness"]) >= 3
    for i, f in enumerate(api["faithfulness"]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[1] == f"{round(f['k'] * 100)} %" and cells[2] == str(f["tokens"])
        assert cells[3] == f"{f['comprehensiveness']:.3f}" and cells[4] == f"{f['sufficiency']:.3f}"
    page.uncheck(tid("faithfulness-on"))  # not asked for: not shown
    classify(page)
    page.wait_for_selector("#faithfulness", state="hidden")


# ---------------------------------------------------------------- generation
GEN = {"prompt": "the movie was ", "temperature": 0.8, "top_k": 20, "seed": 1234,
       "max_new_chars": 1500}


def fill_generation(page, **params: object) -> None:
    p = {**GEN, **params}
    page.fill(tid("generate-prompt"), str(p["prompt"]))
    page.fill(tid("generate-temperature"), str(p["temperature"]))
    page.fill("#generate-top-k", str(p["top_k"]))
    page.fill(tid("generate-seed"), str(p["seed"]))
    page.fill(tid("generate-max"), str(p["max_new_chars"]))


def test_the_playground_offers_a_choice_of_generator_when_several_are_loaded(
        tiny_models_dir: Path, open_page, tmp_path: Path):
    import json

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    shutil.copytree(models / "chargen", models / "chargen-b")
    manifest = json.loads((models / "chargen-b" / "manifest.json").read_text())
    (models / "chargen-b" / "manifest.json").write_text(json.dumps({**manifest,
                                                                   "name": "chargen-b"}))
    with ServerProcess(models, ready_timeout_s=120) as srv:
        page, _ = open_page(srv)
        page.wait_for_selector(tid("model-card"))
        choice = page.get_by_test_id("generate-model")
        assert choice.is_visible()
        options = choice.locator("option").all_inner_texts()
        assert options[0].startswith("chargen (default)") and options[1].startswith("chargen-b")
        assert len(options) == 2  # generators only, not the sentiment model
        choice.select_option("chargen-b")
        fill_generation(page, max_new_chars=30)
        with page.expect_request("**/generate") as sent:
            page.click(tid("generate-submit"))
        assert json.loads(sent.value.post_data)["model"] == "chargen-b"
        page.wait_for_selector(f"{tid('generate-stats')}:has-text('Finished')")
        assert "chargen-b" in page.get_by_test_id("generate-stats").inner_text()
    with ServerProcess(tiny_models_dir, ready_timeout_s=120) as one:  # one generator: no choice
        page, _ = open_page(one)
        page.wait_for_selector(tid("model-card"))
        assert not page.get_by_test_id("generate-model").is_visible()


def test_streamed_output_grows_and_equals_non_streamed(server, open_page):
    page, _ = open_page(server)
    fill_generation(page)
    page.evaluate("""() => {
        const out = document.querySelector('[data-testid="generate-output"]');
        window.lengths = [];
        new MutationObserver(() => window.lengths.push(out.textContent.length))
            .observe(out, {childList: true, characterData: true, subtree: true});
    }""")
    page.click(tid("generate-submit"))
    page.wait_for_selector(f"{tid('generate-stats')}:has-text('Finished')")
    streamed = page.eval_on_selector(tid("generate-output"), "e => e.textContent")
    lengths = page.evaluate("window.lengths")

    whole = httpx.post(server.url + "/generate", json=GEN, timeout=60).json()
    assert streamed == whole["text"]
    assert len(streamed) == GEN["max_new_chars"] or whole["finish_reason"] == "stop"
    assert lengths == sorted(lengths)  # only ever grows
    partial = {n for n in lengths if 0 < n < len(streamed)}
    assert len(partial) >= 2, f"arrived in one piece: {lengths}"
    stats = page.inner_text(tid("generate-stats"))
    assert "seed 1234" in stats and "chars/s" in stats and "first character after" in stats
    shot(page, "generate", "#generate")

    # "Same again" replays the seed the final event reported: the same text
    page.fill(tid("generate-seed"), "")
    page.click("#generate-again")
    page.wait_for_selector(f"{tid('generate-stats')}:has-text('Finished')")
    assert page.eval_on_selector(tid("generate-output"), "e => e.textContent") == streamed


def test_stop_frees_the_slot(server, open_page):
    page, _ = open_page(server)
    assert wait_for(lambda: active_streams(server) == 0)
    fill_generation(page, max_new_chars=20_000, seed=7)
    page.click(tid("generate-submit"))
    # (polled from here: page.wait_for_function compiles its predicate in the page, which
    # the page's Content-Security-Policy refuses, as it should: no eval)
    assert wait_for(lambda: len(page.eval_on_selector(tid("generate-output"),
                                                      "e => e.textContent")) > 50, 30.0)
    assert active_streams(server) == 1  # it is running, in a slot
    page.click(tid("generate-stop"))
    page.wait_for_selector(f"{tid('generate-stats')}:has-text('Stopped')")
    assert wait_for(lambda: active_streams(server) == 0, 10.0), "the slot was not freed"
    n = len(page.eval_on_selector(tid("generate-output"), "e => e.textContent"))
    assert 50 < n < 20_000
    assert page.is_enabled(tid("generate-submit")) and page.is_disabled(tid("generate-stop"))


# ---------------------------------------------------------------- batch
def test_batch_rows_equal_sentiment(server, open_page):
    page, _ = open_page(server)
    lines = ["A wonderful, moving film.", "Dull, slow and far too long.",
             'The "twist" was obvious, but I still enjoyed it, mostly.',
             "=1+1 is not a review", "Not good. Not funny. Not worth it."]
    page.fill(tid("batch-input"), "\n".join(lines) + "\n\n")
    page.click(tid("batch-submit"))
    page.wait_for_selector(tid("batch-row"))
    api = httpx.post(server.url + "/sentiment", json={"texts": lines}, timeout=30).json()
    rows = page.eval_on_selector_all(tid("batch-row"), """rs => rs.map(r => ({
        index: Number(r.dataset.index), label: r.dataset.label, score: Number(r.dataset.score),
        cells: [...r.cells].map(c => c.textContent)}))""")
    assert len(rows) == len(lines)
    for row, want, line in zip(rows, api["results"], lines, strict=True):
        assert row["label"] == want["label"] and row["cells"][2] == want["label"]
        assert abs(row["score"] - want["score"]) <= 1e-6
        assert row["cells"][1] == line and row["cells"][3] == f"{want['score']:.4f}"

    page.click("#batch-table th button[data-sort=score]")  # ascending
    page.click("#batch-table th button[data-sort=score]")  # descending
    scores = page.eval_on_selector_all(tid("batch-row"), "rs => rs.map(r => Number(r.dataset.score))")
    assert scores == sorted(scores, reverse=True)
    assert page.get_attribute("#batch-table th:nth-child(4)", "aria-sort") == "descending"

    with page.expect_download() as dl:
        page.click("#batch-csv")
    csv = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
    assert csv[0] == "index,text,label,score,p_positive,tokens_read,truncated"
    assert len(csv) == len(lines) + 1
    assert '"The ""twist"" was obvious, but I still enjoyed it, mostly."' in csv[3]
    assert ",'=1+1 is not a review," in csv[4]  # no formula in a spreadsheet


# ---------------------------------------------------------------- errors
def test_api_error_and_network_failure_show_in_error(server, open_page):
    page, _ = open_page(server)
    error = page.get_by_test_id("error")
    assert error.is_hidden()
    fill_generation(page)
    page.fill("#generate-stop-seqs", "\n".join("abcde"))  # five: over the limit of 4
    page.click(tid("generate-submit"))
    error.wait_for(state="visible")
    assert "stop" in error.inner_text().lower()
    assert page.is_enabled(tid("generate-submit"))  # not frozen

    page.click("#error-close")
    assert error.is_hidden()
    page.route("**/attention", lambda route: route.abort())
    page.fill(tid("sentiment-input"), "Good film.")
    page.click(tid("sentiment-submit"))
    error.wait_for(state="visible")
    assert "network" in error.inner_text().lower()
    assert page.is_enabled(tid("sentiment-submit"))


def test_invalid_api_key_shows_in_error(keyed_server, open_page):
    page, visits = open_page(keyed_server)
    page.wait_for_selector("#key-form:not([hidden])")  # the page asks for the key
    page.fill("#key-input", "wrong-key")
    page.click("#key-form button[type=submit]")
    page.fill(tid("sentiment-input"), "Good film.")
    page.click(tid("sentiment-submit"))
    error = page.get_by_test_id("error")
    error.wait_for(state="visible")
    assert "api key" in error.inner_text().lower()
    assert page.is_visible("#key-form")

    page.fill("#key-input", "right-key")
    page.click("#key-form button[type=submit]")
    classify(page)
    assert error.is_hidden()
    assert page.evaluate("sessionStorage.getItem('seqserve.apiKey')") == "right-key"
    page.wait_for_selector(tid("model-card"))  # loaded with the key once it was given
    sent = [r.headers.get("authorization") for r in visits.requests if r.url.endswith("/attention")]
    assert sent == ["Bearer wrong-key", "Bearer right-key"]


# ---------------------------------------------------------------- models, live, layout
def test_model_cards_and_live_latency(server, open_page):
    page, _ = open_page(server)
    body = httpx.get(server.url + "/v1/models").json()
    models = body.get("data") or body["models"]
    page.wait_for_selector(tid("model-card"))
    cards = page.locator(tid("model-card"))
    assert cards.count() == len(models)
    for i, m in enumerate(models):
        text = cards.nth(i).inner_text()
        assert m["name"] in text and m["version"] in text and "CPU" in text
        assert "Export checks" in text and "Metrics" in text

    page.click("[data-example=short]")
    classify(page)
    page.uncheck("#live-on")
    page.check("#live-on")  # refresh now
    page.wait_for_selector("#live-table td:text-is('/attention')")
    row = page.locator("#live-table tr", has=page.locator("td:text-is('/attention')"))
    cells = row.locator("td").all_inner_texts()
    assert float(cells[2]) > 0 and float(cells[4]) > 0  # req/s and p50


def test_360px_wide_has_no_horizontal_scroll(server, open_page):
    page, _ = open_page(server, width=360, height=740)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    page.wait_for_selector(tid("model-card"))
    assert page.evaluate(overflow) <= 0
    page.click("[data-example=long]")
    classify(page)
    page.fill(tid("batch-input"), "x" * 400 + "\nA fine film with a very long unbroken "
              + "supercalifragilistic" * 10)
    page.click(tid("batch-submit"))
    page.wait_for_selector(tid("batch-row"))
    fill_generation(page, max_new_chars=200)
    page.click(tid("generate-submit"))
    page.wait_for_selector(f"{tid('generate-stats')}:has-text('Finished')")
    page.fill("#generate-stop-seqs", "\n".join("abcde"))
    page.click(tid("generate-submit"))
    page.get_by_test_id("error").wait_for(state="visible")
    assert page.evaluate(overflow) <= 0
    shot(page, "mobile-360")


# ---------------------------------------------------------------- any number of labels
from tests.training.test_own_data import three_label_model  # noqa: E402,F401  (a fixture)


@pytest.fixture(scope="module")
def three_label_server(tiny_models_dir: Path, three_label_model: Path,  # noqa: F811
                       tmp_path_factory) -> Iterator[ServerProcess]:
    """The tiny models and a classifier of three labels trained from a CSV ("stars")."""
    models = tmp_path_factory.mktemp("three-label-models")
    shutil.copytree(tiny_models_dir, models, dirs_exist_ok=True)
    shutil.copytree(three_label_model, models / "stars")
    with ServerProcess(models, ready_timeout_s=120) as s:
        yield s


def test_a_three_label_classifier_shows_a_meter_per_label(three_label_server, open_page):
    page, visits = open_page(three_label_server)
    page.wait_for_selector(tid("model-card"))
    page.select_option(tid("classify-model"), "stars")
    page.fill(tid("sentiment-input"), "it was okay and fine")
    classify(page)
    meters = page.locator(f"#sentiment-probs {tid('prob')}")
    assert meters.count() == 3
    labels = [meters.nth(k).get_attribute("data-label") for k in range(3)]
    values = [float(meters.nth(k).get_attribute("value")) for k in range(3)]
    api = httpx.post(three_label_server.url + "/sentiment", timeout=30,
                     json={"text": "it was okay and fine", "model": "stars"}).json()
    assert labels == list(api["probabilities"]) == ["negative", "neutral", "positive"]
    assert values == pytest.approx(list(api["probabilities"].values()), abs=1e-3)
    assert page.text_content(tid("sentiment-label")) == api["label"]
    assert visits.local_errors == [], visits.local_errors
    shot(page, "three-labels", "#sentiment-result")
