"""Run every PromQL expression of the Grafana dashboard and the alert rules on a live Prometheus.

deploy_test.sh calls this after sending traffic to the replicas. It fails (exit 1) if:
- any expression does not parse or errors when Prometheus runs it;
- a dashboard expression returns no finite value over the test window (from
  --since to now), or, if it is a rate (it contains ``rate(``), never a non-zero one:
  after the traffic every panel must have shown the activity it is about;
- an alert's signal (its expression left of the top-level comparison, e.g. the 5xx
  ratio of "5xx ratio > 0.05") is never finite and non-zero over the window: a typo
  in a metric or label name would otherwise make an alert that can never fire (an alert
  named with --quiet-signal, whose condition healthy traffic cannot provoke, e.g. a
  failed model reload, only has to run without error);
- Prometheus reports a rule unhealthy (an evaluation error);
- a dashboard variable's label_values() query finds no values;
- a panel, target or variable points at a datasource other than the dashboard's
  `datasource` variable (a hard-coded uid breaks the import into another Grafana), or the
  provisioned datasource is not the default one (what that variable starts on there);
- a seqserve_* metric that the replicas export is on no dashboard panel;
- an alert named with --expect-alert is neither pending nor firing (the traffic made
  its condition true, so Prometheus must have seen it);
- fewer than --expect-replicas replicas answered inference requests.

Grafana's own variables are replaced the way Grafana would: $__rate_interval by
--rate-interval, and a multi-value variable set to "All" by its allValue. Series are
selected by SELECTOR (app_kubernetes_io_name="seqserve"), as the dashboard and rules do.

    python promql_check.py http://127.0.0.1:9090 --since 1767000000 --expect-alert SeqserveOverloaded
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "seqserve.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SELECTOR = 'app_kubernetes_io_name="seqserve"'
DS_VARIABLE = "${datasource}"


def api(base: str, path: str, **params: str | list[str]) -> dict:
    url = f"{base}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422: the body says why
        return json.load(e)


def split_comparison(expr: str) -> str | None:
    """The left operand of the first comparison outside (), {}, [] and strings, if any."""
    depth, i, quote = 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            for op in COMPARISONS:
                if expr.startswith(op, i) and not expr.startswith("=~", i) and not expr.startswith("!~", i):
                    return expr[:i].strip()
        i += 1
    return None


def window_values(base: str, expr: str, since: float, step: str) -> tuple[str | None, list[float]]:
    """(error, finite values of every series at every step from `since` to now)."""
    r = api(base, "query_range", query=expr, start=f"{since:.3f}", end=f"{time.time():.3f}", step=step)
    if r.get("status") != "success":
        return f"{r.get('errorType')}: {r.get('error')}", []
    vals = [float(v) for series in r["data"]["result"] for _, v in series["values"]]
    return None, [v for v in vals if math.isfinite(v)]


def finite_values(result: dict) -> list[float]:
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])] if math.isfinite(float(data["result"][1])) else []
    return [float(s["value"][1]) for s in data["result"] if math.isfinite(float(s["value"][1]))]


def dashboard_items(dash: dict) -> tuple[list[tuple[str, str]], list[dict], set[str]]:
    """(panel title, expr) of every target, the template variables, the datasource uids used."""
    exprs, uids = [], set()

    def walk(panels: list[dict]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            if p.get("datasource"):
                uids.add(p["datasource"]["uid"])
            for t in p.get("targets", []):
                if t.get("datasource"):
                    uids.add(t["datasource"]["uid"])
                exprs.append((f"{p['title']} [{t['refId']}]", t["expr"]))

    walk(dash["panels"])
    variables = dash.get("templating", {}).get("list", [])
    for v in variables:
        if v.get("datasource"):
            uids.add(v["datasource"]["uid"])
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            exprs.append((f"annotation {a['name']}", a["expr"]))
    return exprs, variables, uids


def grafana_substitute(expr: str, variables: list[dict], rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    for v in variables:
        if v.get("type") == "datasource":  # picks the datasource: in no expression
            continue
        value = v.get("allValue") if v.get("includeAll") else None
        if value is None:
            raise SystemExit(f"dashboard variable {v['name']}: no allValue to test with")
        expr = expr.replace(f"${{{v['name']}}}", value).replace("$" + v["name"], value)
    if "$" in expr:
        raise SystemExit(f"unreplaced Grafana variable in {expr!r}")
    return expr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prometheus", help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    ap.add_argument("--since", type=float, required=True,
                    help="unix time the traffic started: the window the panels must show it in")
    ap.add_argument("--step", default="1s", help="resolution of the window's range queries")
    ap.add_argument("--expect-alert", action="append", default=[],
                    help="alert that must be pending or firing now")
    ap.add_argument("--expect-replicas", type=int, default=0,
                    help="replicas that must each have answered inference requests")
    ap.add_argument("--quiet-signal", action="append", default=[],
                    help="alert whose signal may stay absent or 0 (its condition is not provoked)")
    ap.add_argument("--rules-timeout", type=float, default=30.0)
    a = ap.parse_args()
    base = a.prometheus.rstrip("/")
    failures: list[str] = []
    checked = 0

    def fail(msg: str) -> None:
        failures.append(msg)
        print(f"  FAIL {msg}")

    # -- static: everything queries the `datasource` variable, which starts on the
    #    provisioned (default) datasource here and on the one chosen at import elsewhere
    dash = json.loads(DASHBOARD.read_text())
    exprs, variables, uids = dashboard_items(dash)
    if uids != {DS_VARIABLE}:
        fail(f"dashboard datasource uids {sorted(uids)}: expected only {DS_VARIABLE}")
    if not any(v.get("type") == "datasource" and v.get("name") == "datasource"
               and v.get("query") == "prometheus" for v in variables):
        fail("dashboard has no `datasource` variable of type prometheus")
    if not any(d.get("isDefault") for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]):
        fail("the provisioned datasource is not the default one")

    # -- dashboard: every expression parses and returns finite data
    print(f"dashboard: {len(exprs)} expressions")
    for title, raw in exprs:
        expr = grafana_substitute(raw, variables, a.rate_interval)
        r = api(base, "query", query=expr)  # as a stat or table panel runs it
        checked += 1
        if r.get("status") != "success":
            fail(f"dashboard '{title}': {r.get('errorType')}: {r.get('error')}\n       {expr}")
            continue
        err, vals = window_values(base, expr, a.since, a.step)  # as a graph runs it
        is_rate = "rate(" in expr
        why = err or ("no finite data" if not vals else
                      "a rate that stayed 0" if is_rate and not any(vals) else None)
        if why:
            fail(f"dashboard '{title}': {why} over the window\n       {expr}")
        else:
            print(f"  ok   {title}: {len(r['data']['result'])} series now, "
                  f"max {max(vals):.4g} over the window")

    # -- dashboard variables: label_values(selector, label) finds values
    for v in variables:
        if v.get("type") == "datasource":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", q)
        if not m:
            fail(f"variable {v['name']}: cannot test query {q!r}")
            continue
        r = api(base, f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
        checked += 1
        if r.get("status") != "success" or not r["data"]:
            fail(f"variable {v['name']}: {q} found nothing ({r.get('error')})")
        else:
            print(f"  ok   variable {v['name']}: {r['data']}")

    # -- every seqserve_* metric the replicas export is on the dashboard
    names = api(base, "label/__name__/values", **{"match[]": f"{{{SELECTOR}}}"})["data"]
    # prometheus_client also exports a `<counter or histogram>_created` gauge per series
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names
                if n.startswith("seqserve_") and not n.endswith("_created")}
    shown = " ".join(e for _, e in exprs)
    missing = sorted(f for f in families if not re.search(rf"\b{f}(_bucket|_sum|_count)?\b", shown))
    if missing:
        fail(f"metrics on no dashboard panel: {missing}")
    else:
        print(f"  ok   all {len(families)} seqserve_* metric families are on the dashboard")

    # -- alert rules: the full expression runs; its signal has data
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    print(f"alert rules: {len(rules)} expressions")
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        expr = rule["expr"].strip()
        r = api(base, "query", query=expr)
        checked += 1
        if r.get("status") != "success":
            fail(f"rule {name}: {r.get('errorType')}: {r.get('error')}")
            continue
        signal = split_comparison(expr) or expr
        err, vals = window_values(base, signal, a.since, a.step)
        if name in a.quiet_signal and not err:
            shown = f"max {max(vals):.4g}" if vals else "absent"
            print(f"  ok   {name}: runs; signal {shown} (not provoked)")
            continue
        if err or not any(vals):
            fail(f"rule {name}: its signal was never finite and non-zero over the window"
                 f"{': ' + err if err else ''}\n       {signal}")
            continue
        state = "true now" if r["data"]["result"] else "false now"
        print(f"  ok   {name}: signal max {max(vals):.4g} over the window, condition {state}")

    # -- Prometheus evaluated every rule without error
    deadline = time.monotonic() + a.rules_timeout
    while True:
        loaded = [r for g in api(base, "rules")["data"]["groups"] for r in g["rules"]]
        pending = [r["name"] for r in loaded if r.get("health") not in ("ok", "err")]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    if len(loaded) != len(rules):
        fail(f"Prometheus loaded {len(loaded)} rules, alerts.yml has {len(rules)}")
    for r in loaded:
        if r.get("health") != "ok":
            fail(f"rule {r['name']}: health {r.get('health')}: {r.get('lastError')}")

    # -- the alerts the traffic provoked are pending or firing
    for name in a.expect_alert:
        r = api(base, "query", query=f'ALERTS{{alertname="{name}"}}')
        states = sorted({s["metric"]["alertstate"] for s in r["data"]["result"]})
        if not states:
            fail(f"alert {name} is neither pending nor firing after traffic that should trip it")
        else:
            print(f"  ok   alert {name}: {states}")

    # -- the load balancer spread the traffic over every replica
    if a.expect_replicas:
        q = (f'count(sum by (instance) (increase(seqserve_requests_total{{{SELECTOR},'
             'route=~"/sentiment|/attention|/generate"}[5m])) > 0)')
        got = finite_values(api(base, "query", query=q))
        if got != [float(a.expect_replicas)]:
            fail(f"{got} replicas answered inference requests, expected {a.expect_replicas}")
        else:
            print(f"  ok   traffic reached all {a.expect_replicas} replicas")

    print(f"promql_check: {checked} queries, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
