"""Check that the Grafana dashboard imports into any Grafana, offline.

What Grafana's import does with a shared dashboard: it asks for each `__inputs` entry
(here one Prometheus datasource), replaces every ${DS_...} with the chosen uid, and
loads the JSON. This script does the same with a made-up uid and then checks:

- `__inputs` is exactly one datasource input of plugin prometheus, and `__requires`
  names Grafana, the prometheus datasource and every panel type used;
- after the substitution no ${DS_...} is left, and every datasource reference (panels,
  targets, variables, annotations) is the dashboard's `datasource` variable, a
  variable of type datasource on prometheus that starts on the chosen uid: no uid of one
  particular Grafana is hard-coded;
- panel ids are unique, panels do not overlap on the grid;
- no query selects a job (the job name differs between compose, annotation scraping and
  the Prometheus Operator); every seqserve query selects app_kubernetes_io_name="seqserve";
- there are panels for resident memory, CPU, restarts, queue depth (requests in flight,
  active streams, queue wait) and the model threads (seqserve_loop_up).

The compose deployment provisions the same file unchanged (deploy/grafana/provisioning):
there the `datasource` variable falls back to the default datasource.

    python deploy/test/dashboard_check.py [dashboard.json]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "seqserve.json"
SELECTOR = 'app_kubernetes_io_name="seqserve"'
REQUIRED_METRICS = {
    "resident memory": "process_resident_memory_bytes",
    "CPU": "process_cpu_seconds_total",
    "restarts": "process_start_time_seconds",
    "requests in flight": "seqserve_requests_in_flight",
    "active streams": "seqserve_active_streams",
    "queue wait": "seqserve_queue_wait_seconds_bucket",
    "model threads": "seqserve_loop_up",
    "model loop errors": "seqserve_loop_errors_total",
}


def panels_of(dash: dict) -> list[dict]:
    out = []

    def walk(ps: list[dict]) -> None:
        for p in ps:
            out.append(p)
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def check(raw: str) -> list[str]:
    failures: list[str] = []
    dash = json.loads(raw)
    inputs = dash.get("__inputs", [])
    ds_inputs = [i for i in inputs if i.get("type") == "datasource"]
    if len(ds_inputs) != 1 or ds_inputs[0].get("pluginId") != "prometheus" or len(inputs) != 1:
        failures.append(f"__inputs: expected one prometheus datasource input, got {inputs}")
        return failures
    panels = panels_of(dash)
    requires = {(r.get("type"), r.get("id")) for r in dash.get("__requires", [])}
    needed = {("grafana", "grafana"), ("datasource", "prometheus")} | {
        ("panel", p["type"]) for p in panels if p["type"] != "row"}
    if needed - requires:
        failures.append(f"__requires lacks {sorted(needed - requires)}")

    # -- the import: every ${DS_...} replaced by the chosen datasource's uid
    chosen = "imported-prometheus-uid"
    imported = json.loads(raw.replace("${" + ds_inputs[0]["name"] + "}", chosen))
    left = sorted(set(re.findall(r"\$\{DS_[A-Z0-9_]+\}", json.dumps(imported))))
    if left:
        failures.append(f"inputs left unresolved after the import: {left}")
    variables = imported.get("templating", {}).get("list", [])
    dsvar = [v for v in variables if v.get("type") == "datasource"]
    if len(dsvar) != 1 or dsvar[0].get("query") != "prometheus" or dsvar[0].get("name") != "datasource":
        failures.append("expected one variable `datasource` of type datasource on prometheus")
    elif dsvar[0].get("current", {}).get("value") != chosen:
        failures.append("the `datasource` variable does not start on the datasource chosen at import")

    refs = []
    for p in panels_of(imported):
        refs.append((f"panel {p.get('title')}", p.get("datasource")))
        refs += [(f"panel {p.get('title')} [{t.get('refId')}]", t.get("datasource"))
                 for t in p.get("targets", [])]
    refs += [(f"variable {v['name']}", v.get("datasource"))
             for v in variables if v.get("type") != "datasource"]
    refs += [(f"annotation {a.get('name')}", a.get("datasource"))
             for a in imported.get("annotations", {}).get("list", [])]
    for where, ref in refs:
        if ref is None:
            continue
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        if uid != "${datasource}":
            failures.append(f"{where}: datasource {ref!r} is not the `datasource` variable")

    # -- layout
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        failures.append("panel ids are missing or repeated")
    cells: dict[tuple[int, int], str] = {}
    for p in dash.get("panels", []):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    failures.append(f"panel {p['title']!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = p["title"]
            else:
                continue
            break
        if g["x"] + g["w"] > 24:
            failures.append(f"panel {p['title']!r} is wider than the grid")

    # -- selection: no job names; the seqserve label everywhere it matters
    exprs = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    exprs += [(f"variable {v['name']}", v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
              for v in variables if v.get("type") == "query"]
    for title, e in exprs:
        if re.search(r"\bjob\s*=~?", e):
            failures.append(f"{title}: selects a job name: {e}")
        for m in re.finditer(r"\b(seqserve_\w+|process_\w+|up)\s*\{([^}]*)\}", e):
            if SELECTOR not in m.group(2):
                failures.append(f"{title}: {m.group(1)} without {SELECTOR}")
        if re.search(r"\b(seqserve_\w+|process_\w+)\b(?!\s*\{)", e):
            failures.append(f"{title}: a metric without a selector: {e}")
    shown = " ".join(e for _, e in exprs)
    for what, metric in REQUIRED_METRICS.items():
        if not re.search(rf"\b{metric}\b", shown):
            failures.append(f"no panel shows {what} ({metric})")
    return failures


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARD
    failures = check(path.read_text())
    for f in failures:
        print(f"  FAIL {f}")
    print(f"dashboard_check: {path.name}: {len(panels_of(json.loads(path.read_text())))} panels, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
