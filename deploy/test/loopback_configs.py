"""Write loopback variants of the repo's Prometheus and HAProxy configs for deploy_test.sh.

The compose files find replicas by DNS on the compose network; the test runs the
containers with host networking on free loopback ports instead. Only the addresses
change: the scrape jobs, the rule files, the load balancer's checks, timeouts and
balancing are the repo's own. Every rewrite must match exactly once, so a change to
the real configs that the test no longer understands fails the test instead of being
silently skipped.

    python loopback_configs.py --replicas 127.0.0.1:8101,127.0.0.1:8102 \
        --lb 127.0.0.1:8200 --lb-stats 127.0.0.1:8201 --prometheus 127.0.0.1:8300 \
        --scrape-interval 2s --out DIR
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent


def _job(cfg: dict, name: str) -> dict:
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == name]
    if len(jobs) != 1:
        raise SystemExit(f"prometheus.yml: expected one scrape job {name!r}, found {len(jobs)}")
    return jobs[0]


def prometheus_config(replicas: list[str], lb_stats: str, prometheus: str, interval: str) -> str:
    src = DEPLOY / "prometheus" / "prometheus.yml"
    cfg = yaml.safe_load(src.read_text())
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    # the same rule files, by absolute path (the variant lives elsewhere)
    cfg["rule_files"] = [str((src.parent / f).resolve()) for f in cfg["rule_files"]]
    svc = _job(cfg, "seqserve")
    if "dns_sd_configs" not in svc:
        raise SystemExit("prometheus.yml: job seqserve no longer uses dns_sd_configs")
    del svc["dns_sd_configs"]
    svc["static_configs"] = [{"targets": replicas}]
    _job(cfg, "lb")["static_configs"] = [{"targets": [lb_stats]}]
    _job(cfg, "prometheus")["static_configs"] = [{"targets": [prometheus]}]
    return yaml.safe_dump(cfg, sort_keys=False)


def _sub_once(pattern: str, repl: str, text: str) -> str:
    out, n = re.subn(pattern, lambda _m: repl, text, flags=re.M)
    if n != 1:
        raise SystemExit(f"haproxy.cfg: pattern {pattern!r} matched {n} times, expected 1")
    return out


def haproxy_config(replicas: list[str], lb: str, lb_stats: str) -> str:
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    text = _sub_once(r"^(\s*)bind :8080\s*$", f"    bind {lb}", text)
    text = _sub_once(r"^(\s*)bind :8404\s*$", f"    bind {lb_stats}", text)
    servers = "\n".join(f"    server seqserve-{i + 1} {addr} check" for i, addr in enumerate(replicas))
    text = _sub_once(r"^\s*server-template seqserve .*$", servers, text)
    # no container DNS on the host: drop the resolvers section the template used
    text = _sub_once(r"^resolvers containerdns\n(?:[ \t]+.*\n|[ \t]*#.*\n)*", "", text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", required=True, help="comma-separated host:port of each replica")
    ap.add_argument("--lb", required=True)
    ap.add_argument("--lb-stats", required=True)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--scrape-interval", default="2s")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    replicas = a.replicas.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "prometheus.yml").write_text(
        prometheus_config(replicas, a.lb_stats, a.prometheus, a.scrape_interval))
    (a.out / "haproxy.cfg").write_text(haproxy_config(replicas, a.lb, a.lb_stats))


if __name__ == "__main__":
    main()
