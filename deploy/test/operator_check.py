"""Check the Prometheus Operator objects of deploy/k8s/prometheus-operator/ offline.

- Both validate against the Operator's CRD schemas (the models that
  cloudcoil-models-prometheus-operator generates from its CRDs), strictly: a field the
  schema does not know is an error, as `kubectl apply` with server-side validation says.
- The PrometheusRule's spec is deploy/prometheus/alerts.yml, exactly (`--write`
  regenerates prometheusrule.yaml from it).
- The ServiceMonitor selects the Service of deploy/k8s/service.yaml, names one of its
  ports, scrapes the path the pods' prometheus.io/path annotation names, and copies the
  pod label that the rules select on (app.kubernetes.io/name=seqserve, seen on the
  series as app_kubernetes_io_name).
- Every alert has a runbook_url into docs/runbook.md whose anchor is a heading there.

    python deploy/test/operator_check.py            # check (exit 1 on any failure)
    python deploy/test/operator_check.py --write    # regenerate prometheusrule.yaml
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OPERATOR = K8S / "prometheus-operator"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE = OPERATOR / "prometheusrule.yaml"
MONITOR = OPERATOR / "servicemonitor.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SELECTED = ("app.kubernetes.io/name", "seqserve")  # the rules' app_kubernetes_io_name="seqserve"

RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `python deploy/test/operator_check.py
# --write`: edit alerts.yml, then regenerate (`make deploy-test` fails while they differ).
#
# Prometheus Operator: the seqserve alerting rules. Your Prometheus object must select
# it (ruleSelector / ruleNamespaceSelector; kube-prometheus-stack selects `release:
# <its release name>` by default: add that label, or set
# prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false). Each alert's
# runbook_url points into docs/runbook.md.
"""


def rule_object() -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "seqserve",
                     "labels": {"app.kubernetes.io/name": "seqserve",
                                "app.kubernetes.io/component": "monitoring"}},
        "spec": yaml.safe_load(ALERTS.read_text()),
    }


class _Literal(str):
    pass


def _dump(obj: dict) -> str:
    dumper = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))

    def lit(o):
        if isinstance(o, dict):
            return {k: lit(v) for k, v in o.items()}
        if isinstance(o, list):
            return [lit(v) for v in o]
        return _Literal(o) if isinstance(o, str) and "\n" in o else o

    return yaml.dump(lit(obj), Dumper=dumper, sort_keys=False, width=200)


def _unknown_fields(given, dumped, path: str = "") -> list[str]:
    """Keys of `given` that did not survive validation (the schema does not know them)."""
    out = []
    if isinstance(given, dict):
        for k, v in given.items():
            if not isinstance(dumped, dict) or k not in dumped:
                out.append(f"{path}.{k}" if path else k)
            else:
                out += _unknown_fields(v, dumped[k], f"{path}.{k}" if path else k)
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (g, d) in enumerate(zip(given, dumped, strict=False)):
            out += _unknown_fields(g, d, f"{path}[{i}]")
    return out


def validate_crd(doc: dict) -> list[str]:
    from cloudcoil.models.prometheus_operator import v1

    model = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}.get(doc.get("kind"))
    if model is None or doc.get("apiVersion") != "monitoring.coreos.com/v1":
        return [f"not a monitoring.coreos.com/v1 ServiceMonitor or PrometheusRule: {doc.get('kind')}"]
    try:
        obj = model.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError
        return [f"{doc['kind']}: {e}"]
    dumped = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{doc['kind']}: unknown field {f}" for f in _unknown_fields(doc, dumped)]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M):
        out.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="regenerate prometheusrule.yaml from alerts.yml")
    a = ap.parse_args()
    if a.write:
        RULE.write_text(RULE_HEADER + _dump(rule_object()))
        print(f"wrote {RULE.relative_to(ROOT)}")
    failures: list[str] = []

    rule = yaml.safe_load(RULE.read_text())
    monitor = yaml.safe_load(MONITOR.read_text())
    for doc in (rule, monitor):
        failures += validate_crd(doc)

    if rule != rule_object():
        failures.append(f"{RULE.relative_to(ROOT)} is not alerts.yml: run {Path(__file__).name} --write")

    service = yaml.safe_load((K8S / "service.yaml").read_text())
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    sel = monitor["spec"]["selector"].get("matchLabels", {})
    if not sel or any(service["metadata"].get("labels", {}).get(k) != v for k, v in sel.items()):
        failures.append(f"ServiceMonitor selector {sel} does not select the Service's labels")
    ports = {p.get("name") for p in service["spec"]["ports"]}
    annotations = pod["metadata"].get("annotations", {})
    for ep in monitor["spec"]["endpoints"]:
        if ep.get("port") not in ports:
            failures.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port "
                            f"{sorted(ports)}")
        if ep.get("path", "/metrics") != annotations.get("prometheus.io/path", "/metrics"):
            failures.append(f"ServiceMonitor path {ep.get('path')} differs from the pods' prometheus.io/path")
    key, value = SELECTED
    if key not in monitor["spec"].get("podTargetLabels", []):
        failures.append(f"ServiceMonitor podTargetLabels lacks {key}: the rules select on it")
    if pod["metadata"]["labels"].get(key) != value:
        failures.append(f"the pods are not labelled {key}={value}: the rules select on it")

    heads = anchors(RUNBOOK.read_text()) if RUNBOOK.exists() else set()
    for group in rule_object()["spec"]["groups"]:
        for r in group["rules"]:
            url = r.get("annotations", {}).get("runbook_url", "")
            m = re.fullmatch(r"docs/runbook\.md#([\w-]+)", url)
            if not m or m.group(1) not in heads:
                failures.append(f"alert {r.get('alert')}: runbook_url {url!r} is no heading of "
                                "docs/runbook.md")

    for f in failures:
        print(f"  FAIL {f}")
    n_rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    print(f"operator_check: ServiceMonitor + PrometheusRule ({n_rules} rules), {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
