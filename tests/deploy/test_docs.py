"""The README stays true: every setting is documented with its default."""

from pathlib import Path

from app.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_and_its_default_is_in_the_readme():
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()
        default = getattr(default, "value", default)
        row = f"| `SEQSERVE_{name.upper()}` | `{default}` |"
        assert row in README, row


def test_readme_shows_the_two_setup_commands():
    assert "make serve" in README and "make test" in README
