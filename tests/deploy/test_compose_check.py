"""deploy/test/compose_check.py, the compose lint of `make deploy-test`: the repo's
compose file and Dockerfile pass; a short image name anywhere, and a built service
whose health check a podman (OCI) build would drop, are refused."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "test"))

import compose_check  # noqa: E402


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    compose, dockerfile = tmp_path / "docker-compose.yml", tmp_path / "Dockerfile"
    shutil.copy(ROOT / "docker-compose.yml", compose)
    shutil.copy(ROOT / "Dockerfile", dockerfile)
    return compose, dockerfile


def test_the_repos_compose_file_and_dockerfile_pass():
    assert compose_check.check(ROOT / "docker-compose.yml", ROOT / "Dockerfile") == []
    assert compose_check.main([str(ROOT / "docker-compose.yml"),
                               "--dockerfile", str(ROOT / "Dockerfile")]) == 0


@pytest.mark.parametrize("ref, ok", [
    ("haproxy:2.8", False), ("prom/prometheus:v3.5.0", False), ("seqserve:cpu", False),
    ("docker.io/library/haproxy:2.8", True), ("localhost/seqserve:cpu", True),
    ("quay.io/prometheus/prometheus", True), ("registry:5000/x/y:1", True),
    ("localhost:5000/seqserve", True)])
def test_fully_qualified(ref: str, ok: bool):
    assert compose_check.fully_qualified(ref) is ok


def test_interpolation_takes_the_files_defaults():
    assert compose_check.interpolate("${X:-a/b:1}") == "a/b:1"
    assert compose_check.interpolate("${X-a}") == "a"
    assert compose_check.interpolate("${X:-a}", {"X": "q.io/z"}) == "q.io/z"


@pytest.mark.parametrize("old, new", [
    ("image: docker.io/library/haproxy:2.8", "image: haproxy:2.8"),
    ("image: docker.io/grafana/grafana:12.0.2", "image: grafana/grafana:12.0.2"),
    ("${SEQSERVE_IMAGE:-localhost/seqserve:cpu}", "${SEQSERVE_IMAGE:-seqserve:cpu}"),
    ("${SEQSERVE_BASE_IMAGE:-docker.io/library/python:3.12-slim-bookworm}",
     "${SEQSERVE_BASE_IMAGE:-python:3.12-slim-bookworm}"),
])
def test_a_short_image_name_is_refused(files, old: str, new: str, capsys):
    compose, dockerfile = files
    text = compose.read_text()
    assert old in text
    compose.write_text(text.replace(old, new, 1))
    problems = compose_check.check(compose, dockerfile)
    assert len(problems) == 1 and "short" in problems[0], problems
    assert compose_check.main([str(compose), "--dockerfile", str(dockerfile)]) == 1
    assert "short" in capsys.readouterr().err


def test_a_short_base_image_in_the_dockerfile_is_refused(files):
    compose, dockerfile = files
    dockerfile.write_text(dockerfile.read_text().replace(
        "ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm",
        "ARG BASE_IMAGE=python:3.12-slim-bookworm"))
    problems = compose_check.check(compose, dockerfile)
    assert problems and all("short" in p for p in problems)
    assert any("ARG BASE_IMAGE" in p for p in problems)


def _without_healthcheck(text: str) -> str:
    """The compose file with the shared (x-seqserve) healthcheck block removed."""
    out = re.sub(r"\n  healthcheck:\n(    .*\n)+", "\n", text, count=1)
    assert out != text
    return out


def test_a_built_service_without_a_compose_healthcheck_is_refused(files):
    compose, dockerfile = files
    compose.write_text(_without_healthcheck(compose.read_text()))
    problems = compose_check.check(compose, dockerfile)
    # the CPU service loses it (the GPU one states its own)
    assert len(problems) == 1 and "service seqserve:" in problems[0], problems
    assert "podman" in problems[0] and "HEALTHCHECK" in problems[0]


def test_a_disabled_or_different_healthcheck_is_refused(files):
    compose, dockerfile = files
    text = compose.read_text()
    compose.write_text(text.replace(
        '    test: ["CMD", "python", "/srv/seqserve/healthcheck.py"]\n    interval: 10s\n'
        '    timeout: 3s\n    start_period: 60s',
        '    test: ["NONE"]\n    interval: 10s\n    timeout: 3s\n    start_period: 60s', 1))
    assert any("no compose healthcheck" in p for p in compose_check.check(compose, dockerfile))
    compose.write_text(text.replace('"/srv/seqserve/healthcheck.py"]\n    interval: 10s\n'
                                    '    timeout: 3s\n    start_period: 60s',
                                    '"/srv/other.py"]\n    interval: 10s\n'
                                    '    timeout: 3s\n    start_period: 60s', 1))
    problems = compose_check.check(compose, dockerfile)
    assert len(problems) == 1 and "is not the Dockerfile's HEALTHCHECK" in problems[0], problems


def test_waiting_for_health_and_replicas_without_mode_are_refused(files):
    compose, dockerfile = files
    text = compose.read_text()
    compose.write_text(text.replace("      prometheus:\n        condition: service_started",
                                    "      prometheus:\n        condition: service_healthy", 1))
    problems = compose_check.check(compose, dockerfile)
    assert len(problems) == 1 and "service grafana: depends_on prometheus" in problems[0]
    compose.write_text(text.replace("      mode: replicated\n", "", 1))
    problems = compose_check.check(compose, dockerfile)
    assert len(problems) == 1 and "replicas without deploy.mode" in problems[0], problems
