"""The sizes the docs state are the sizes measured now, not remembered ones
(`make deploy-test`, after the image is built; the model sizes also in pytest).

Measured: each model folder under models/ (all its files), their total, and, when
given, the CPU image, its base and the part over the base (``podman image inspect``).
Checked against what the docs say:

- README.md: ``(`models/<name>`, X MB)`` and ``**`models/<name>`** (X MB)``, and with
  the image sizes given ``X MB as measured on a Debian base``;
- docs/deploy.md: ``the bundled models X MB`` and, with the image sizes given,
  ``**X MB, of which Y MB over the Z MB base**``.

MB are 10^6 bytes (as podman reports them). A stated figure passes when it is within
5 % of the measured one, or within half a unit of its last written digit. Every
mismatch is one line with the measured value to write instead; exit 1 if any.

    sizes_check.py [--root .] [--image-bytes N --base-bytes N]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository
from seqcore.modelfolder import model_folders  # noqa: E402

MB = 1_000_000


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def agrees(stated: str, measured_mb: float) -> bool:
    value = float(stated)
    digits = len(stated.split(".")[1]) if "." in stated else 0
    return abs(value - measured_mb) <= max(0.05 * measured_mb, 0.5 * 10 ** -digits)


def check(root: Path, image_bytes: int | None = None,
          base_bytes: int | None = None) -> tuple[list[str], dict[str, float]]:
    problems: list[str] = []
    measured: dict[str, float] = {}
    models = root / "models"
    for d in model_folders(models):
        measured[f"models/{d.name}"] = folder_bytes(d) / MB
    measured["models (all)"] = sum(v for k, v in measured.items() if k.startswith("models/"))

    readme = (root / "README.md").read_text()
    pattern = re.compile(r"\(`(models/[\w.-]+)`, ([\d.]+) MB\)|\*\*`(models/[\w.-]+)`\*\* "
                         r"\(([\d.]+) MB\)")
    for m in pattern.finditer(readme):
        name, stated = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        if name not in measured:
            problems.append(f"README.md: {name} ({stated} MB) is not a model folder")
        elif not agrees(stated, measured[name]):
            problems.append(f"README.md: {name} is {measured[name]:.1f} MB, "
                            f"not {stated} MB")

    deploy = (root / "docs" / "deploy.md").read_text()
    for m in re.finditer(r"the bundled models ([\d.]+) MB", deploy):
        if not agrees(m.group(1), measured["models (all)"]):
            problems.append(f"docs/deploy.md: the bundled models are "
                            f"{measured['models (all)']:.0f} MB, not {m.group(1)} MB")
    if image_bytes is not None and base_bytes is not None:
        measured["image"] = image_bytes / MB
        measured["base"] = base_bytes / MB
        measured["over base"] = (image_bytes - base_bytes) / MB
        for m in re.finditer(r"([\d.]+) MB as measured on a Debian base", readme):
            if not agrees(m.group(1), measured["image"]):
                problems.append(f"README.md: the image is {measured['image']:.0f} MB "
                                f"(measured now), not {m.group(1)} MB")
        m = re.search(r"\*\*([\d.]+) MB, of which ([\d.]+) MB over the\s+([\d.]+) MB base\*\*",
                      deploy)
        if m is None:
            problems.append("docs/deploy.md: no '**X MB, of which Y MB over the Z MB "
                            "base**' statement of the image size")
        else:
            for stated, key in zip(m.groups(), ("image", "over base", "base"), strict=True):
                if not agrees(stated, measured[key]):
                    problems.append(f"docs/deploy.md: the {key} is {measured[key]:.0f} MB "
                                    f"(measured now), not {stated} MB")
    return problems, measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--image-bytes", type=int)
    ap.add_argument("--base-bytes", type=int)
    a = ap.parse_args(argv)
    problems, measured = check(a.root, a.image_bytes, a.base_bytes)
    print("sizes_check: measured " + ", ".join(f"{k} {v:.1f} MB" for k, v in measured.items()))
    for p in problems:
        print(f"sizes_check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
