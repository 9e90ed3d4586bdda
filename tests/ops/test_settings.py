"""Settings: every bad value is one line naming the variable and what it accepts, exit 2;
comma lists, a fixed set of log levels, ``.env``, the models folder, ``--help``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from annotated_types import Ge, Gt, Le

from app.__main__ import check_models_dir, help_text, load_settings
from app.config import Settings
from app.engine.registry import ModelLoadError, Registry

ROOT = Path(__file__).resolve().parents[2]
# settings with no value to refuse: any string is a key
FREE_FORM = {"api_key", "admin_key"}


def bad_values(name: str) -> list[str]:
    """Values the setting must refuse, derived from its declaration."""
    f = Settings.model_fields[name]
    ann = f.annotation
    if name == "models_dir":
        return []  # a path string is always a path; its existence is checked apart
    if name == "cors_origins":
        return ["not an origin", "https://a.example,ftp:/x", '["https://a.example"']
    if name == "host":
        return ["two words", ""]
    if name == "default_models":
        return ["sentiment", "text-classification=", "text-classification=a,text-classification=b",
                '{"text-classification": "a"']
    if ann is bool:
        return ["maybe", "2"]
    if get_origin(ann) is Literal or (isinstance(ann, type) and hasattr(ann, "__members__")):
        return ["bogus"]
    if ann in (int, float):
        out = ["not-a-number"]
        for m in f.metadata:
            if isinstance(m, Ge):
                out.append(str(m.ge - 1))
            elif isinstance(m, Gt):
                out.append(str(m.gt))
            elif isinstance(m, Le):
                out.append(str(m.le + 1))
        if ann is int:
            out.append("1.5")
        return out
    return []


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("SEQSERVE_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    return monkeypatch


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_each_setting_refuses_a_bad_value_in_one_line_naming_it(name, clean_env, capsys):
    var = f"SEQSERVE_{name.upper()}"
    values = bad_values(name)
    if not values:
        assert name in FREE_FORM | {"models_dir"}, f"{name}: no bad value known; add one"
        clean_env.setenv(var, "any value at all")
        assert load_settings() is not None
        return
    for value in values:
        clean_env.setenv(var, value)
        with pytest.raises(SystemExit) as e:
            load_settings()
        assert e.value.code == 2, (var, value)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(var), (value, err)
        assert "expected" in err, err
        if get_origin(Settings.model_fields[name].annotation) is Literal:
            for choice in get_args(Settings.model_fields[name].annotation):
                assert choice in err


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_each_setting_accepts_its_default_from_the_environment(name, clean_env):
    f = Settings.model_fields[name]
    default = f.default if f.default_factory is None else f.default_factory()
    if default is None:
        return
    value = getattr(default, "value", default)
    text = ",".join(value) if isinstance(value, list) else str(value)
    clean_env.setenv(f"SEQSERVE_{name.upper()}", text)
    assert getattr(load_settings(), name) == default


def test_cors_origins_as_a_comma_list_or_a_json_list(clean_env):
    clean_env.setenv("SEQSERVE_CORS_ORIGINS", "https://a.example, http://b.example:8080/")
    assert Settings().cors_origins == ["https://a.example", "http://b.example:8080"]
    clean_env.setenv("SEQSERVE_CORS_ORIGINS", '["https://a.example", "*"]')
    assert Settings().cors_origins == ["https://a.example", "*"]
    clean_env.setenv("SEQSERVE_CORS_ORIGINS", "")
    assert Settings().cors_origins == []


def test_default_models_as_a_comma_list_or_a_json_object(clean_env):
    clean_env.setenv("SEQSERVE_DEFAULT_MODELS",
                     " text-classification = product , text-generation=chargen ")
    assert Settings().default_models == {"text-classification": "product",
                                         "text-generation": "chargen"}
    clean_env.setenv("SEQSERVE_DEFAULT_MODELS", '{"text-classification": "product"}')
    assert Settings().default_models == {"text-classification": "product"}


def test_log_level_is_one_of_a_fixed_set_any_case(clean_env):
    clean_env.setenv("SEQSERVE_LOG_LEVEL", "WARNING")
    assert Settings().log_level == "warning"


def test_a_dot_env_file_is_read_and_the_environment_wins(clean_env, tmp_path):
    (tmp_path / ".env").write_text("SEQSERVE_MAX_QUEUE=7\nSEQSERVE_PORT=9001\nOTHER=1\n")
    assert Settings().max_queue == 7
    clean_env.setenv("SEQSERVE_PORT", "9002")
    assert Settings().port == 9002


def test_a_missing_models_folder_is_one_line_naming_the_path(clean_env, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        check_models_dir(Settings(models_dir=Path("models")))  # relative, from tmp_path
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "models") in err and "SEQSERVE_MODELS_DIR" in err


def test_two_folders_with_one_model_name_are_refused_naming_both(tiny_models_dir, tmp_path,
                                                                 capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    shutil.copytree(models / "sentiment", models / "sentiment-small")
    with pytest.raises(ModelLoadError) as e:
        Registry.load(Settings(models_dir=models))
    assert str(models / "sentiment") in str(e.value) and str(models / "sentiment-small") in str(e.value)
    with pytest.raises(SystemExit):
        check_models_dir(Settings(models_dir=models))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sentiment-small" in err


def test_help_lists_every_setting_with_its_default():
    text = help_text()
    for name in Settings.model_fields:
        assert f"SEQSERVE_{name.upper()}" in text


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_python_m_app_help_exits_0_and_bad_settings_exit_2_in_one_line(tmp_path):
    r = _run(["--help"], tmp_path)
    assert r.returncode == 0 and "SEQSERVE_LOG_LEVEL" in r.stdout and "usage" in r.stdout
    r = _run([], tmp_path, SEQSERVE_LOG_LEVEL="verbose")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "SEQSERVE_LOG_LEVEL" in r.stderr and "debug, info, warning, error" in r.stderr
    # started outside the repository with the default relative models folder
    r = _run([], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert str(tmp_path / "models") in r.stderr
    # in JSON log format the one line is a JSON object
    r = _run([], tmp_path, SEQSERVE_LOG_FORMAT="json", SEQSERVE_PORT="0")
    assert r.returncode == 2 and r.stderr.startswith("{") and r.stderr.count("\n") == 1
