"""Print the service's runtime requirements from pyproject.toml, one per line.

The image installs these into its virtual environment before the code is copied in,
so the dependency layer is rebuilt only when pyproject.toml changes (``pip install .``
would need the whole source tree first and rebuild the layer on every code edit).
``--gpu`` swaps ``onnxruntime`` for the ``gpu`` extra (``onnxruntime-gpu``): the two
packages install the same ``onnxruntime`` module and must not be installed together.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def runtime_requirements(pyproject: Path, gpu: bool) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = list(project["dependencies"])
    if gpu:
        deps = [d for d in deps if re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0] != "onnxruntime"]
        deps += project["optional-dependencies"]["gpu"]
    return deps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    ap.add_argument("--gpu", action="store_true", help="onnxruntime-gpu instead of onnxruntime")
    args = ap.parse_args()
    print("\n".join(runtime_requirements(args.pyproject, args.gpu)))


if __name__ == "__main__":
    main()
