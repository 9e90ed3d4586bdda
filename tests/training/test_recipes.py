"""Training recipes (training/recipes/*.toml): the shipped models' manifests record
exactly the settings of their recipes, every recipe loads for its command, the command
line overrides a recipe, and a bad recipe is a usage error (exit 2) before any work."""

from __future__ import annotations

import json
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from seqcore.modelfolder import ModelFolder
from training import ensemble_chargen, ngrams, train_chargen, train_sentiment
from training.cad import CadOptions
from training.scaffold import RECIPES, parse_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"training.train_sentiment": train_sentiment.TrainConfig,
           "training.train_chargen": train_chargen.TrainConfig,
           "training.ngrams": ngrams.NgramConfig,
           "training.ensemble_chargen": ensemble_chargen.EnsembleConfig}
MAINS = {"training.train_sentiment": train_sentiment.main,
         "training.train_chargen": train_chargen.main,
         "training.ngrams": ngrams.main,
         "training.ensemble_chargen": ensemble_chargen.main}


def _recipe(name: str) -> dict:
    return tomllib.loads((RECIPES / f"{name}.toml").read_text())


def _training(model: str) -> dict:
    return json.loads((ROOT / "models" / model / "manifest.json").read_text())["training"]


def _mismatches(recipe: dict, recorded: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """The settings where the run the manifest records differs from the recipe (its
    values over the command's defaults). An option the manifest does not record is newer
    than the run: the recipe must leave it at its default, which is what the run did."""
    config = CONFIGS[recipe["command"]]
    out = []
    for f in fields(config):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        wanted = recipe.get(f.name, default)
        if f.name not in recorded:
            if f.name in recipe:
                out.append(f"{f.name}: the run predates it, the recipe sets {wanted!r}")
        elif recorded[f.name] != wanted:
            out.append(f"{f.name}: recorded {recorded[f.name]!r}, recipe {wanted!r}")
    return out


@pytest.mark.parametrize(("model", "recipe"), [("chargen", "chargen"),
                                               ("chargen-ensemble", "chargen-ensemble")])
def test_a_shipped_generators_manifest_records_its_recipes_settings(model: str, recipe: str):
    assert _mismatches(_recipe(recipe), _training(model)) == []


def test_the_shipped_sentiment_models_two_runs_are_its_two_recipes():
    term, encoder = _recipe("sentiment"), _recipe("sentiment-encoder")
    recorded = _training("sentiment")
    # the n-gram run records the encoder's version as its base, and the encoder's own run
    assert _mismatches(term, recorded, skip=("base",)) == []
    assert _mismatches(encoder, recorded["base_training"]) == []
    assert term["base"] == encoder["out"]  # the term is added to that recipe's encoder


def test_a_recipe_that_drifts_from_the_manifest_is_caught():
    recipe = {**_recipe("chargen"), "lr": 1e-3}
    assert _mismatches(recipe, _training("chargen")) == [
        "lr: recorded 0.0005, recipe 0.001"]
    recorded = {k: v for k, v in _training("chargen").items() if k != "ema"}
    assert _mismatches(_recipe("chargen"), recorded) == [
        "ema: the run predates it, the recipe sets 0.998"]


RECIPE_FILES = sorted(RECIPES.rglob("*.toml"))


@pytest.mark.parametrize("path", RECIPE_FILES, ids=[str(p.relative_to(RECIPES)) for p in RECIPE_FILES])
def test_every_recipe_loads_for_its_command(path: Path):
    recipe = tomllib.loads(path.read_text())
    config = CONFIGS[recipe.pop("command")]
    cfg = parse_config(config, ["--recipe", str(path)], command=None)
    for key, value in recipe.items():
        assert getattr(cfg, key) == value, key


def test_there_is_a_recipe_per_shipped_model_and_experiments_beside_them():
    shipped = {p.stem for p in RECIPES.glob("*.toml")}
    assert {"sentiment", "sentiment-encoder", "chargen", "chargen-ensemble"} <= shipped
    assert len(list((RECIPES / "experiments").glob("*.toml"))) >= 5


def test_the_command_line_overrides_the_recipe():
    cfg = parse_config(train_chargen.TrainConfig,
                       ["--recipe", "chargen", "--epochs", "3", "--no-stateful", "--seed", "9"])
    assert (cfg.epochs, cfg.stateful, cfg.seed) == (3, False, 9)  # given here
    assert (cfg.lr, cfg.ema, cfg.init_from) == (5e-4, 0.998, "models/chargen")  # the recipe's
    assert cfg.hidden == 256  # neither: the default
    bare = parse_config(train_chargen.TrainConfig, [])
    assert (bare.lr, bare.ema, bare.epochs) == (2e-3, 0.0, 36)


def test_help_shows_a_recipes_values_as_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        train_chargen.main(["--recipe", "chargen", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--recipe PATH" in text
    assert "(default: 0.0005)" in text and "(default: models/chargen-ensemble)" in text


@pytest.mark.parametrize(("body", "message"), [
    ('command = "training.train_chargen"\nlearning_rate = 0.1\n',
     "no such setting: learning_rate"),
    ('command = "training.train_chargen"\nepochs = "ten"\n', "epochs = 'ten': expected int"),
    ('command = "training.train_chargen"\nstateful = 1\n', "stateful = 1: expected bool"),
    ('command = "training.train_chargen"\nepochs = 0\n', "epochs = 0: must be >= 1"),
    ('command = "training.train_chargen"\ncell = "transformer"\n',
     "cell = 'transformer': one of lstm, gru, rnn"),
    ('command = "training.ngrams"\nbuckets = 8\n', "is a recipe for training.ngrams, not "
                                                  "training.train_chargen"),
    ("epochs = [\n", "not a TOML file"),
])
def test_a_bad_recipe_is_a_usage_error_before_any_work(body: str, message: str,
                                                        tmp_path: Path, capsys):
    path = tmp_path / "r.toml"
    path.write_text(body)
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        train_chargen.main(["--recipe", str(path), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_a_missing_recipe_is_a_usage_error(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        train_sentiment.main(["--recipe", str(tmp_path / "nope.toml")])
    assert e.value.code == 2
    assert "cannot be read" in capsys.readouterr().err


def test_the_cad_options_are_declared_once():
    for config in (train_sentiment.TrainConfig, ngrams.NgramConfig):
        assert issubclass(config, CadOptions)
        assert not {"cad", "cad_repeat"} & set(vars(config).get("__annotations__", {}))
    sent = {f.name: f for f in fields(train_sentiment.TrainConfig)}
    ng = {f.name: f for f in fields(ngrams.NgramConfig)}
    for name in ("cad", "cad_repeat"):
        assert sent[name].metadata["help"] == ng[name].metadata["help"]
        assert sent[name].default == ng[name].default


def test_a_run_from_a_recipe_records_the_recipes_settings_and_the_overrides(tmp_path: Path):
    from tests.training.test_training import corpus

    recipe = tmp_path / "tiny.toml"
    recipe.write_text('command = "training.train_chargen"\nhidden = 16\nemb_dim = 8\n'
                      'chunk = 32\nbatch_size = 8\neval_streams = 4\nlr = 0.01\n'
                      'epochs = 3\nmax_steps = 2\n')
    out = tmp_path / "m"
    assert train_chargen.main(["--recipe", str(recipe), "--data", str(corpus(tmp_path / "c.txt")),
                               "--out", str(out), "--epochs", "1"]) == 0
    recorded = ModelFolder.open(out).manifest["training"]
    assert (recorded["hidden"], recorded["emb_dim"], recorded["lr"]) == (16, 8, 0.01)
    assert (recorded["epochs"], recorded["steps"]) == (1, 2)  # the command line won
