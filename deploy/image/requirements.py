"""Print requirements from pyproject.toml, one per line: the input of the lock files.

``make lock`` compiles these lists into pinned lock files (uv pip compile):

- ``requirements.lock``: the service's runtime dependencies (no torch); the CPU image
  installs from it.
- ``requirements-gpu.lock``: the same with ``onnxruntime`` swapped for the ``gpu`` extra
  (``onnxruntime-gpu``; the two install the same module and must not be installed
  together); the CUDA image installs from it.
- ``requirements-dev.lock``: runtime + the ``train`` and ``dev`` extras, less torch
  (``--exclude torch``): torch is installed first from ``TORCH_SPEC``/``TORCH_INDEX``
  (Makefile), because the right wheel (CPU or CUDA) depends on the machine and its index.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()


def requirements(pyproject: Path, gpu: bool = False, extras: tuple[str, ...] = (),
                 exclude: tuple[str, ...] = ()) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project["optional-dependencies"]
    deps = list(project["dependencies"])
    if gpu:
        deps = [d for d in deps if _name(d) != "onnxruntime"] + optional["gpu"]
    for extra in extras:  # "all": every group but gpu
        for group in (sorted(g for g in optional if g != "gpu") if extra == "all" else [extra]):
            deps += optional[group]
    drop = {e.lower() for e in exclude}
    return [d for d in deps if _name(d) not in drop]


def check_lock(reqs: list[str], lock: Path) -> list[str]:
    """Requirements that `lock` does not pin to a version they accept (a stale lock)."""
    from packaging.requirements import Requirement

    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", lock.read_text(), re.M))
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    bad = []
    for line in reqs:
        req = Requirement(line)
        pin = pins.get(re.sub(r"[-_.]+", "-", req.name).lower())
        if pin is None or not req.specifier.contains(pin, prereleases=True):
            bad.append(f"{line} (locked: {pin or 'absent'})")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    ap.add_argument("--gpu", action="store_true", help="onnxruntime-gpu instead of onnxruntime")
    ap.add_argument("--extra", action="append", default=[],
                    help="add an optional-dependency group (all: every group but gpu)")
    ap.add_argument("--exclude", action="append", default=[], help="leave a package out")
    ap.add_argument("--check", type=Path, metavar="LOCK",
                    help="exit 1 unless LOCK pins each requirement to a version it accepts")
    args = ap.parse_args()
    reqs = requirements(args.pyproject, args.gpu, tuple(args.extra), tuple(args.exclude))
    if args.check:
        bad = check_lock(reqs, args.check)
        for b in bad:
            print(f"{args.check}: {b}: run `make lock`")
        raise SystemExit(1 if bad else 0)
    print("\n".join(reqs))


if __name__ == "__main__":
    main()
