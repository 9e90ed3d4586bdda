"""Lint of the compose file for podman as well as Docker (`make deploy-test`, step 2).

podman refuses a short image name it cannot resolve ("short-name did not resolve":
``haproxy:2.8`` names no registry), and a plain ``podman build`` (OCI format, as
podman-compose runs it) drops the Dockerfile's HEALTHCHECK with only a warning. So:

1. every image the stack pulls or builds from is fully qualified: the services'
   ``image``, the ``*IMAGE`` build arguments, and the Dockerfile's ``ARG ..._IMAGE``
   defaults and ``FROM`` lines, with ``${VAR:-default}`` taken at its default (a
   name is fully qualified when its first part is a registry: it holds a ``.`` or a
   ``:``, or is ``localhost``);
2. every service built from the Dockerfile has a compose-level ``healthcheck`` (not
   disabled), and when the stage it builds has a HEALTHCHECK, the compose one runs the
   same command: the health check then survives a podman build;
3. no ``depends_on`` waits for ``condition: service_healthy``: podman-compose waits
   with ``podman wait --condition=healthy``, and podman runs health checks from
   systemd timers, so without systemd the wait never ends (the stack hangs after its
   first service);
4. ``deploy.replicas`` comes with ``deploy.mode: replicated``: podman-compose (1.6)
   reads ``replicas`` only then, and otherwise starts one container.

Usage: ``compose_check.py [docker-compose.yml] [--dockerfile Dockerfile]``; one line
per problem, exit 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """``${VAR:-default}`` / ``${VAR-default}`` / ``${VAR}``: the variable from ``env``
    (none by default: the file's own defaults are what is checked), else the default."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def fully_qualified(ref: str) -> bool:
    """True when the image reference names its registry (docker's rule for the first
    path component: a domain holds a '.' or a ':' or is 'localhost')."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def _healthcheck_command(test: Any) -> list[str] | None:
    """A compose or Dockerfile health check's command as argv (None: none/disabled)."""
    if test is None:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    test = [str(t) for t in test]
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return test


def dockerfile_stages(text: str) -> tuple[dict[str, str], dict[str, list[str] | None], list[str]]:
    """(ARG defaults, each stage's HEALTHCHECK command or None, the FROM images)."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    args: dict[str, str] = {}
    health: dict[str, list[str] | None] = {}
    froms: list[str] = []
    stage: str | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and stage is None:
            name, eq, default = rest.strip().partition("=")
            if eq:
                args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            froms.append(parts[0])
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(froms))
            health[stage] = None
        elif word == "HEALTHCHECK" and stage is not None:
            opts = rest.strip()
            while opts.startswith("--"):
                opts = opts.split(None, 1)[1] if " " in opts else ""
            kind, _, cmd = opts.partition(" ")
            if kind.upper() == "NONE":
                health[stage] = None
            elif cmd.strip().startswith("["):
                health[stage] = [str(c) for c in json.loads(cmd)]
            else:
                health[stage] = ["/bin/sh", "-c", cmd.strip()]
    return args, health, froms


def check(compose_path: Path, dockerfile: Path | None = None) -> list[str]:
    doc = yaml.safe_load(compose_path.read_text())
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    stage_health: dict[str, list[str] | None] = {}
    if dockerfile is not None and dockerfile.exists():
        args, stage_health, froms = dockerfile_stages(dockerfile.read_text())
        for name, default in args.items():
            if name.endswith("IMAGE") and not fully_qualified(default):
                problems.append(f"{dockerfile.name}: ARG {name}={default}: short image name "
                                "(podman cannot resolve it): write docker.io/...")
        stages = set(stage_health)
        for ref in dict.fromkeys(froms):
            image = interpolate(ref, args)
            if image not in stages and image != "scratch" and not fully_qualified(image):
                problems.append(f"{dockerfile.name}: FROM {ref} ({image}): short image name")
    for name, svc in services.items():
        svc = svc or {}
        image = svc.get("image")
        if image is not None:
            ref = interpolate(str(image))
            if not fully_qualified(ref):
                problems.append(f"service {name}: image {image!r} ({ref}) is a short name: "
                                "podman refuses it; write the registry (docker.io/..., "
                                "localhost/... for a local build)")
        for dep, spec in (svc.get("depends_on") or {}).items() \
                if isinstance(svc.get("depends_on"), dict) else []:
            if isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                problems.append(f"service {name}: depends_on {dep} with condition "
                                "service_healthy: podman-compose's wait for it never ends "
                                "where podman's health checks do not run (no systemd)")
        deploy = svc.get("deploy") or {}
        if "replicas" in deploy and deploy.get("mode") != "replicated":
            problems.append(f"service {name}: deploy.replicas without deploy.mode: "
                            "replicated: podman-compose starts one container")
        build = svc.get("build")
        if build is None:
            continue
        build_args = build.get("args", {}) if isinstance(build, dict) else {}
        if isinstance(build_args, list):
            build_args = dict(a.split("=", 1) for a in build_args if "=" in a)
        for arg, value in build_args.items():
            if arg.endswith("IMAGE"):
                ref = interpolate(str(value))
                if not fully_qualified(ref):
                    problems.append(f"service {name}: build arg {arg}={value!r} ({ref}) is a "
                                    "short image name")
        hc = svc.get("healthcheck")
        cmd = None if hc is None or hc.get("disable") else _healthcheck_command(hc.get("test"))
        if cmd is None:
            problems.append(f"service {name}: built here but has no compose healthcheck: a "
                            "podman (OCI) build drops the Dockerfile's HEALTHCHECK, so the "
                            "compose file must state it")
            continue
        target = build.get("target") if isinstance(build, dict) else None
        want = stage_health.get(target) if target else None
        if want is not None and cmd != want:
            problems.append(f"service {name}: compose healthcheck {cmd} is not the "
                            f"Dockerfile's HEALTHCHECK of stage {target!r} {want}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("compose", nargs="?", default="docker-compose.yml", type=Path)
    ap.add_argument("--dockerfile", default=Path("Dockerfile"), type=Path)
    a = ap.parse_args(argv)
    problems = check(a.compose, a.dockerfile)
    for p in problems:
        print(f"compose_check: {p}", file=sys.stderr)
    if not problems:
        n = len((yaml.safe_load(a.compose.read_text()) or {}).get("services") or {})
        print(f"compose_check: {a.compose}: {n} services, fully-qualified images, "
              "healthchecks that survive a podman build")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
