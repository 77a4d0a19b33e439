#!/usr/bin/env bash
# What a person sees in the MLflow UI: render an experiment's runs page in headless Chromium and save a PNG.
#
#   bench/ui_screenshot.sh [STORE] [EXPERIMENT] [OUT.png]
#   bench/ui_screenshot.sh sqlite:///mlflow.db ssgan docs/results/mlflow-runs.png
#
# Needs Debian's chromium (apt-get install chromium). Starts `mlflow server` on a free loopback port for the
# store, waits for it, renders http://127.0.0.1:PORT/#/experiments/ID/runs and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-sqlite:///mlflow.db}
EXPERIMENT=${2:-ssgan}
OUT=${3:-runs/mlflow-runs.png}
BIN=.venv/bin
command -v chromium >/dev/null || { echo "error: chromium is not installed (apt-get install chromium)" >&2; exit 2; }
ID=$($BIN/python - "$STORE" "$EXPERIMENT" <<'PY'
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
exp = mlflow.get_experiment_by_name(sys.argv[2])
if exp is None:
    sys.exit(f"error: no experiment {sys.argv[2]!r} in {sys.argv[1]}")
print(exp.experiment_id)
PY
)
PORT=$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$BIN/mlflow server --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" >/tmp/ssgan-ui-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
mkdir -p "$(dirname "$OUT")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=${WIDTH:-1600},900 \
  --virtual-time-budget=15000 --screenshot="$OUT" "http://127.0.0.1:$PORT/#/experiments/$ID/runs${QUERY:+?$QUERY}" 2>/dev/null
echo "$OUT"
