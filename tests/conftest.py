"""Shared fixtures: tiny exported models (no data, no network) and app clients.

``tiny_models_dir``: a models folder with a small sentiment and a small char model,
random weights, exported through the real export path (checks included). Fast, and
enough for behaviour that does not depend on model quality.

``models_dir``: the committed models in ``models/`` (the real ones).

Markers: ``slow`` is given here, at collection, to the tests that train models, start
a server or another process, start the service on the committed models in every test,
or run many examples or much load (soak, fuzzing, property tests, load runs):
whole modules in ``SLOW_MODULES``, single tests in ``SLOW_TESTS``, and every test that
uses a fixture of ``SLOW_FIXTURES``. ``make test-fast`` runs ``-m 'not slow and not
browser'`` (under a minute on a 2-core machine); ``make test`` and CI run everything.
A name in these lists that no longer exists stops the run (``pytest.UsageError``), so
the lists cannot silently go stale.
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
# module -> why its tests are slow
SLOW_MODULES: dict[str, str] = {
    "tests/training/test_training.py": "trains models",
    "tests/training/test_cad.py": "trains models",
    "tests/training/test_own_data.py": "trains models and serves them",
    "tests/training/test_evaluation_sets.py": "trains models",
    "tests/training/test_own_model.py": "exports PyTorch models and starts python -m app",
    "tests/seqcore/test_cells.py": "trains a model of every cell",
    "tests/seqcore/test_char_ensemble.py": "trains generators and their students",
    "tests/seqcore/test_split.py": "cuts graphs in child processes",
    "tests/protocols/test_sentiment_extras.py": "trains encoders and n-gram terms",
    "tests/protocols/test_schemathesis.py": "fuzzes every operation",
    "tests/protocols/test_properties.py": "property tests: hundreds of examples each",
    "tests/protocols/test_client_python.py": "starts a server",
    "tests/protocols/test_openapi_client.py": "starts a server",
    "tests/protocols/test_v2_protocol.py": "starts a server",
    "tests/http/test_adversarial.py": "starts servers and attacks them",
    "tests/http/test_adversarial_costs.py": "starts servers and attacks them",
    "tests/ops/test_e2e.py": "starts servers, with several workers",
    "tests/ops/test_soak_short.py": "soaks a server",
    "tests/bench/test_bench_clients.py": "starts a server for the benchmark clients",
    "tests/protocols/test_api.py": "starts the service on the committed models in every test",
    "tests/http/test_request_path.py": "starts the service on the committed models in every test",
    "tests/engine/test_reload.py": "loads, checks and swaps model folders; starts servers",
}
# module::test -> why (a test of a module that is otherwise fast)
SLOW_TESTS: dict[str, str] = {
    "tests/engine/test_faults.py::test_corrupt_or_missing_model_file_exits_non_zero_naming_the_file":
        "starts python -m app",
    "tests/engine/test_faults.py::test_sigterm_under_load_answers_every_accepted_request_and_exits_0":
        "starts a server under load",
    "tests/engine/test_faults.py::test_full_generation_queue_answers_503_with_retry_after_at_once":
        "fills the generation queue",
    "tests/engine/test_faults.py::test_full_classification_queue_answers_503_with_retry_after_at_once":
        "fills the classification queue",
    "tests/engine/test_faults.py::test_queue_wait_deadline_answers_503_instead_of_hanging":
        "holds requests in the queue until their deadline",
    "tests/engine/test_generation_engine.py::"
    "test_per_step_counts_reach_the_counters_when_a_stream_leaves_and_every_1000_chars":
        "generates thousands of characters",
    "tests/ops/test_logging.py::test_every_line_of_a_json_server_is_one_json_object_with_the_request_fields":
        "starts a server",
    "tests/protocols/test_openai_compat.py::test_api_key": "starts a server",
    "tests/protocols/test_openai_compat.py::test_chat_template_with_role_prefixes":
        "starts a server",
    "tests/bench/test_bench_tools.py::test_char_width_measures_a_trained_folder_and_an_untrained_width":
        "times generation steps at two widths (a benchmark)",
    "tests/engine/test_batching.py::"
    "test_a_pick_holds_the_oldest_row_fits_the_batch_and_beats_running_it_alone":
        "property test: hypothesis examples",
    "tests/engine/test_stopping.py::test_releases_exactly_what_the_whole_text_algorithm_released":
        "property test: hypothesis examples",
    "tests/engine/test_stopping.py::test_pieces_of_several_characters_stop_where_single_characters_do":
        "property test: hypothesis examples",
    "tests/protocols/test_bad_input.py::test_oversized_body_without_expect_continue_gets_413_not_a_reset":
        "starts a server",
    "tests/seqcore/test_faithfulness.py::"
    "test_attention_faithfulness_is_opt_in_and_matches_the_offline_measure":
        "starts the service on the committed models and runs the offline measure",
    "tests/ops/test_tracing.py::test_the_service_imports_and_serves_without_opentelemetry":
        "starts a Python process that serves without opentelemetry",
    "tests/ops/test_settings.py::test_python_m_app_help_exits_0_and_bad_settings_exit_2_in_one_line":
        "starts python -m app several times",
    "tests/http/test_security.py::test_missing_or_unsafe_request_id_is_replaced_by_a_generated_one":
        "starts the service for each of eight request ids",
    "tests/seqcore/test_faithfulness.py::test_the_offline_table_has_every_explanation_and_k":
        "runs the offline faithfulness command on the committed model",
    "tests/seqcore/test_faithfulness.py::test_faithfulness_is_the_same_alone_and_batched_with_other_requests":
        "runs erasure faithfulness on the committed model under concurrent requests",
    "tests/training/test_short_set.py::"
    "test_the_short_set_is_kept_apart_from_the_negation_set_and_the_augmentation":
        "generates the whole augmentation",
    "tests/training/test_recipes.py::"
    "test_a_run_from_a_recipe_records_the_recipes_settings_and_the_overrides": "trains a model",
    "tests/training/test_short_data.py::"
    "test_ngrams_trains_on_the_snippets_and_scores_the_held_out_ones": "trains a model",
    "tests/training/test_training_scaffold.py::test_chargen_max_steps_makes_a_complete_small_run":
        "trains a model",
    "tests/training/test_training_scaffold.py::test_sentiment_max_steps_makes_a_complete_small_run":
        "trains a model",
    "tests/training/test_training_scaffold.py::"
    "test_stateful_training_exports_and_passes_the_checks_with_every_cell":
        "trains a model of every cell",
}
# fixtures that start a server process: every test using one is slow
SLOW_FIXTURES = frozenset({"server", "live", "live_server", "long_gen_server", "keyed_server",
                           "three_label_server"})


def _deselects_slow(config: pytest.Config) -> bool:
    """Whether ``-m`` leaves out every test marked ``slow``, whatever its other marks."""
    expr = config.getoption("markexpr", "") or ""
    if "slow" not in expr:
        return False
    try:
        from _pytest.mark.expression import Expression  # pytest's own reading of -m
        compiled = Expression.compile(expr)
        slow_alone = compiled.evaluate(lambda name, /, **_: name == "slow")
        slow_and_every_other = compiled.evaluate(lambda name, /, **_: True)
        return not slow_alone and not slow_and_every_other
    except Exception:  # another pytest: collect everything and let -m deselect
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A module whose every test is slow is not even imported when ``-m`` leaves slow
    tests out (``make test-fast``: collection takes half as long)."""
    try:
        module = collection_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None
    return True if module in SLOW_MODULES and _deselects_slow(config) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` as the lists above say; a listed name that no longer exists in its
    (collected) module is a usage error."""
    seen: dict[str, object] = {}
    for item in items:
        module = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        seen[module] = getattr(item, "module", None)
        name = getattr(item, "originalname", None) or item.name
        if (module in SLOW_MODULES or f"{module}::{name}" in SLOW_TESTS
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)
    stale = [key for key in SLOW_TESTS
             if key.split("::")[0] in seen and seen[key.split("::")[0]] is not None
             and not hasattr(seen[key.split("::")[0]], key.split("::")[1])]
    stale += [m for m in SLOW_MODULES if not (ROOT / m).is_file()]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py marks as slow what does not exist: {stale}")


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
