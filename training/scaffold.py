"""What the training commands share: the command line built from a config dataclass,
device and threads, the learning-rate schedule, the stopping rules, progress and the
per-epoch history (kept in the manifest and drawn as curves.png).

A training command declares its settings as a dataclass whose fields are made with
``option(default, help)``; ``command_line`` turns it into an argparse parser (every
option with its help and its default shown in ``--help``, booleans as
``--flag/--no-flag``) and runs the command's ``train(cfg)``, printing data and output
errors as one ``error:`` line (exit 2) instead of a traceback.

Recipes (nanoGPT's ``config/`` files, as plain data): ``--recipe PATH`` reads a TOML file
of settings (``training/recipes/``: one per shipped model, and the experiments that did
not ship in ``experiments/``) that replace the defaults; options given on the command line
override the recipe. A recipe's keys are the config's field names (``max_len``, not
``--max-len``) plus ``command``, the module it is for; an unknown key, a value of the
wrong type or out of range is a usage error (exit 2), as the same option would be.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from training.data import DataError
from training.manifest import OutputError


def option(default: Any, help: str, *, at_least: float | None = None,
           above: float | None = None, below: float | None = None,
           at_most: float | None = None) -> Any:
    """A config field with its command-line help, and the range a number given on the
    command line must lie in (checked when parsed: a clear usage error, exit 2)."""
    bounds = {"at_least": at_least, "above": above, "below": below, "at_most": at_most}
    return field(default=default, metadata={"help": help, "bounds": bounds})


def out_of_range(value: Any, bounds: dict[str, float | None]) -> str | None:
    """What is wrong with ``value`` under ``bounds`` (from ``option``), or None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value:  # NaN
        return "must be a number"
    lo, lo_open, hi = bounds.get("at_least"), False, bounds.get("below")
    if bounds.get("above") is not None:
        lo, lo_open = bounds["above"], True
    if lo is not None and (value <= lo if lo_open else value < lo):
        return f"must be {'>' if lo_open else '>='} {lo:g}"
    if hi is not None and value >= hi:
        return f"must be < {hi:g}"
    if bounds.get("at_most") is not None and value > bounds["at_most"]:
        return f"must be <= {bounds['at_most']:g}"
    return None


@dataclass
class RunOptions:
    """The options both training commands have, with the same meaning; a command's
    config subclasses this and adds its own (``--help`` lists these in a section of
    their own: a base config with a ``help_group`` gets one)."""

    help_group: ClassVar[str] = "options of both training commands"
    replace_served: bool = option(False, "allow --out inside the served models/ folder")
    cell: str = option("lstm", "recurrent cell: lstm | gru | rnn")
    clip: float = option(1.0, "gradient-norm clip", above=0)
    seed: int = option(1234, "random seed")
    threads: int = option(1, "torch CPU threads", at_least=1)
    device: str = option("auto", "auto (CUDA when present) | cpu | cuda")
    max_steps: int = option(0, "stop after this many optimizer steps in total (0: no limit); "
                               "the model is still exported and evaluated", at_least=0)


# ----------------------------------------------------------------------------- command line
RECIPES = Path(__file__).resolve().parent / "recipes"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter):
    """The module's docstring as written, and each option's default after its help."""


def _default(f: Any) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def _group_of(config_cls: type, name: str) -> str | None:
    """The ``help_group`` of the base config that declares field ``name`` (None: the
    command's own option)."""
    for base in config_cls.__mro__[1:]:
        if name in getattr(base, "__dataclass_fields__", {}) and getattr(base, "help_group", None):
            return base.help_group
    return None


def build_parser(config_cls: type, description: str | None,
                 choices: dict[str, Sequence[str]] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--kebab-case`` option per field of ``config_cls``
    (the command's own first, then each shared group's), and ``--recipe``."""
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    # SUPPRESS: no "(default: ...)" and no key in the parsed options when not given
    p.add_argument("--recipe", default=argparse.SUPPRESS, metavar="PATH",
                   help="a recipe: a TOML file of settings (training/recipes/; a bare name "
                        "such as 'chargen' is training/recipes/chargen.toml) that replace "
                        "the defaults below; options given here override it")
    groups: dict[str | None, Any] = {None: p}
    choices = choices or {}
    ordered = sorted(fields(config_cls), key=lambda f: _group_of(config_cls, f.name) or "")
    for f in ordered:
        title = _group_of(config_cls, f.name)
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        group = groups[title]
        default = _default(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, default=default, help=help_text,
                               action=argparse.BooleanOptionalAction)
        elif isinstance(default, list):
            group.add_argument(flag, dest=f.name, default=default, help=help_text, nargs="+",
                               metavar=f.name.upper().rstrip("S"))
        else:
            group.add_argument(flag, dest=f.name, default=default, help=help_text,
                               type=type(default) if default is not None else str,
                               choices=choices.get(f.name))
    return p


class RecipeError(ValueError):
    """A recipe file that cannot be read, or a setting in it that the command has not or
    that is not a valid value."""


def recipe_path(name: str) -> Path:
    """``name`` as a path, or a bare name of a recipe in ``training/recipes/``."""
    path = Path(name)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        for candidate in (RECIPES / f"{name}.toml", RECIPES / "experiments" / f"{name}.toml"):
            if candidate.exists():
                return candidate
    return path


def _recipe_value(f: Any, value: Any, choices: Sequence[str] | None) -> Any:
    """``value`` from a recipe as field ``f``'s type; RecipeError if it is not one."""
    default = _default(f)
    kind = type(default) if default is not None else str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML's 1 for a float setting
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise RecipeError(f"{f.name} = {value!r}: expected {kind.__name__}")
    problem = out_of_range(value, f.metadata.get("bounds") or {})
    if problem:
        raise RecipeError(f"{f.name} = {value!r}: {problem}")
    if choices and value not in choices:
        raise RecipeError(f"{f.name} = {value!r}: one of {', '.join(choices)}")
    return value


def load_recipe(path: Path | str, config_cls: type, command: str | None = None,
                choices: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The settings of the recipe at ``path`` for ``config_cls`` (field name -> value),
    checked as the command line checks them. ``command``: the module the recipe must be
    for (its ``command`` key, when it has one)."""
    path = recipe_path(str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"{path}: not a TOML file ({e})") from None
    wanted = data.pop("command", None)
    if command is not None and wanted is not None and wanted != command:
        raise RecipeError(f"{path} is a recipe for {wanted}, not {command}")
    known = {f.name: f for f in fields(config_cls)}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise RecipeError(f"{path}: no such setting: {', '.join(unknown)} (the settings are "
                          "the options' names with '_', as in --help)")
    try:
        return {k: _recipe_value(known[k], v, (choices or {}).get(k)) for k, v in data.items()}
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


def parse_config(config_cls: type, argv: list[str] | None = None,
                 description: str | None = None,
                 choices: dict[str, Sequence[str]] | None = None,
                 command: str | None = None) -> Any:
    """``argv`` (and the recipe it names) as a ``config_cls``; usage errors exit 2."""
    parser = build_parser(config_cls, description, choices)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    named, _ = pre.parse_known_args(argv)
    if named.recipe:
        try:
            parser.set_defaults(**load_recipe(named.recipe, config_cls, command, choices))
        except RecipeError as e:
            parser.error(f"--recipe {e}")
    args = vars(parser.parse_args(argv))
    args.pop("recipe", None)
    for f in fields(config_cls):
        problem = out_of_range(args.get(f.name), f.metadata.get("bounds") or {})
        if problem:
            parser.error(f"--{f.name.replace('_', '-')} {args[f.name]}: {problem}")
    return config_cls(**args)


def command_line(config_cls: type, train: Callable[[Any], Any], description: str | None,
                 argv: list[str] | None = None,
                 choices: dict[str, Sequence[str]] | None = None) -> int:
    """Parse ``argv`` into ``config_cls`` and run ``train``; 2 on a data or output error."""
    module = train.__module__
    if module == "__main__":  # python -m training.<command>: the module's own name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else None
    cfg = parse_config(config_cls, argv, description, choices, command=module)
    try:
        train(cfg)
    except (DataError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- device, schedule
def pick_device(name: str):
    """``auto`` is CUDA when present, else the CPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """Cosine decay from ``lr`` at step 0 to the floor ``lr_min`` at ``total``."""
    progress = min(step / max(total, 1), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def planned_steps(steps_per_epoch: int, epochs: int, max_steps: int = 0) -> int:
    """The optimizer steps a run plans: every epoch's, or ``max_steps`` when fewer.
    The LR schedule spans them."""
    total = steps_per_epoch * epochs
    return min(total, max_steps) if max_steps > 0 else total


class Stopping:
    """The stopping rules of a run: early stopping on a validation metric (``patience``
    epochs without improvement), a wall-clock budget (``max_minutes``, checked after each
    epoch) and a step budget (``max_steps`` optimizer steps, checked after each step)."""

    def __init__(self, patience: int, max_minutes: float, max_steps: int = 0,
                 higher_is_better: bool = False, start: float | None = None):
        self.patience, self.max_minutes, self.max_steps = patience, max_minutes, max_steps
        self.sign = 1.0 if higher_is_better else -1.0
        self.start = time.time() if start is None else start
        self.best: float | None = None
        self.best_epoch = 0
        self.reason = ""

    def out_of_steps(self, step: int) -> bool:
        return self.max_steps > 0 and step >= self.max_steps

    def improved(self, epoch: int, value: float) -> bool:
        """Record an epoch's validation value; True when it is the best so far."""
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def should_stop(self, epoch: int, step: int) -> bool:
        """After an epoch (and ``improved``): whether to stop, with ``reason`` set."""
        if self.out_of_steps(step):
            self.reason = f"step budget reached ({self.max_steps} steps)"
        elif epoch - self.best_epoch >= self.patience:
            self.reason = f"early stop: no improvement for {self.patience} epochs"
        elif (time.time() - self.start) / 60 > self.max_minutes:
            self.reason = "time budget reached"
        else:
            return False
        return True


# ----------------------------------------------------------------------------- progress
def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Progress of one phase (``total`` units): a tqdm bar on stderr when stderr is a
    terminal; otherwise (a log file) a plain line every ``every_fraction`` of the total or
    ``every_seconds``, whichever comes first (but at most one line per ``min_gap``
    seconds before the end, so a quick phase prints one line), with count/total, elapsed
    time and ETA."""

    def __init__(self, total: int, desc: str, unit: str = "step", every_fraction: float = 0.1,
                 every_seconds: float = 30.0, min_gap: float = 2.0, stream=None,
                 tty: bool | None = None):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.n, self.start = 0, time.time()
        self.every_fraction, self.every_seconds = every_fraction, every_seconds
        self.min_gap = min_gap
        self.stream = stream if stream is not None else sys.stdout
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._last_t, self._last_n, self.postfix = self.start, 0, ""
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True)

    def eta(self) -> float | None:
        elapsed = time.time() - self.start
        if self.n == 0 or self.total == 0:
            return None
        return elapsed / self.n * (self.total - self.n)

    def line(self) -> str:
        pct = f" ({self.n / self.total:.0%})" if self.total else ""
        eta = self.eta()
        tail = f", ETA {_clock(eta)}" if eta is not None and self.n < self.total else ""
        post = f" {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {self.unit} {self.n}/{self.total}{pct}{post}, "
                f"{_clock(time.time() - self.start)} elapsed{tail}")

    def write(self, message: str) -> None:
        """Print a line (to stdout) without breaking the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
            return
        now = time.time()
        step = max(1, math.ceil(self.total * self.every_fraction)) if self.total else 0
        done = bool(self.total) and self.n >= self.total
        due = bool(step) and self.n - self._last_n >= step and now - self._last_t >= self.min_gap
        if done or due or now - self._last_t >= self.every_seconds:
            print(self.line(), file=self.stream, flush=True)
            self._last_t, self._last_n = now, self.n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.n != self._last_n:
            print(self.line(), file=self.stream, flush=True)
            self._last_n = self.n

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable, desc: str, total: int | None = None, unit: str = "item"
          ) -> Iterator:
    """Iterate with a ``Progress`` of its own (data preparation, evaluation)."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit=unit) as prog:
        for item in iterable:
            yield item
            prog.update()


# ----------------------------------------------------------------------------- history
def plot_history(history: list[dict], path: Path | str, title: str = "") -> Path | None:
    """Draw the per-epoch curves of ``history`` (one row per epoch: ``epoch``, and any of
    ``train_loss``, validation metrics, ``lr``) as a PNG; losses on the left, other
    validation metrics on the right, the learning rate below. Without matplotlib: a
    one-line warning and no picture."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; no curves.png", file=sys.stderr)
        return None
    if not history:
        return None
    skip = {"epoch", "seconds", "lr", "steps"}
    keys = [k for k in history[0] if k not in skip and isinstance(history[0][k], int | float)]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    x = list(range(1, len(history) + 1))
    with_lr = any("lr" in h for h in history)
    if with_lr:
        fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    else:
        fig, ax0 = plt.subplots(figsize=(7, 4.5))
        axes = [ax0]
    ax = axes[0]
    for k in losses:
        ax.plot(x, [h.get(k) for h in history], marker="o", ms=3, label=k)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if others:
        ax2 = ax.twinx()
        for i, k in enumerate(others):
            ax2.plot(x, [h.get(k) for h in history], marker="s", ms=3, ls="--",
                     color=f"C{len(losses) + i}", label=k)
        ax2.set_ylabel(", ".join(others))
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="best")
    elif losses:
        ax.legend(loc="best")
    ax.set_title(title)
    if with_lr:
        axes[1].plot(x, [h.get("lr") for h in history], color="gray")
        axes[1].set_ylabel("lr")
        axes[1].grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
