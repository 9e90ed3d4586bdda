#!/usr/bin/env bash
# The CUDA path in one script, for a machine with an NVIDIA GPU (CUDA 13 + cuDNN 9
# libraries, as onnxruntime-gpu needs). From the repository root:
#
#     bash bench/gpu_check.sh            # writes .cache/bench/gpu/ (JSON + logs)
#
# 1. a venv with the service and the gpu extra (onnxruntime-gpu INSTEAD of onnxruntime);
# 2. bench/gpu_check.py: each shipped graph on CUDA vs CPU, batch invariance on CUDA, and
#    generation with plain run vs IO binding (state kept on the device between steps);
# 3. the service started with SEQSERVE_DEVICE=cuda (it refuses to start if ORT would fall
#    back to the CPU), /readyz, /v1/models (provider), one /sentiment and one /generate;
# 4. `python -m bench.run --quick --no-peer` against that service (SEQSERVE_DEVICE=cuda);
#    its /sentiment load is wrk (apt-get installs it when missing; without it, step 4
#    is skipped and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/bench/gpu
VENV=${GPU_VENV:-.cache/bench/gpu-venv}
PORT=${PORT:-8077}
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements-gpu.lock
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/pip" install -q aiohttp  # bench.run's /generate load generator
fi
PY="$VENV/bin/python"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
"$PY" -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee "$OUT/ort.txt"

echo "== export checks, batch invariance and IO binding on CUDA"
"$PY" -m bench.gpu_check | tee "$OUT/gpu_check.json"

echo "== the service with SEQSERVE_DEVICE=cuda"
SEQSERVE_DEVICE=cuda SEQSERVE_PORT=$PORT "$PY" -m app > "$OUT/service.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "localhost:$PORT/readyz" > /dev/null && break
  kill -0 $PID 2>/dev/null || { cat "$OUT/service.log"; exit 1; }
  sleep 0.5
done
curl -sf "localhost:$PORT/v1/models" | tee "$OUT/models.json"; echo
curl -sf "localhost:$PORT/sentiment" -H 'content-type: application/json' \
     -d '{"text": "A moving, beautifully acted film."}'; echo
curl -sf "localhost:$PORT/generate" -H 'content-type: application/json' \
     -d '{"prompt": "the free spirit ", "max_new_chars": 80, "seed": 1}'; echo
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT

echo "== bench.run on CUDA (quick, no LitServe peer)"
command -v wrk > /dev/null || apt-get install -y wrk > /dev/null 2>&1 || true
if command -v wrk > /dev/null; then
  "$PY" -m bench.run --quick --no-peer --no-clients --device cuda \
    --out "$OUT/benchmarks-gpu.md" | tail -n 60 | tee "$OUT/bench.txt"
else
  echo "no wrk on this machine (apt-get install -y wrk): bench.run skipped" | tee "$OUT/bench.txt"
fi
echo "written to $OUT"
