#!/usr/bin/env bash
# Issue 5's CUDA checks and GPU benchmarks, in one call on a lent GPU machine (torch from its image, no
# MLflow there). MNIST's raw files travel gzipped in .gpu_data/ (not in git: `gzip -k` them there from
# ../shared/datasets/MNIST/raw); results go to $OUT (the device tool's output folder) or bench/results/gpu.
#   1. bench/kernels.py: kernels per step, with and without G's fused pass (train.fused_g);
#   2. the CUDA tests (graph replay == eager step, for one seed and for stacked seeds; no compile tests);
#   3. bench/throughput.py: MLP steps/s with the CUDA graph (default), with TF32 matmuls, eager, and
#      for 3 seeds at once;
#   4. configs/mnist-100.yaml, full 300 epochs, split seeds 0, 1 and 2 trained at once (ssgan/seeds.py):
#      each seed's test error, and an upper bound on one seed's time;
#   5. seed 0 alone (the timing that counts for "300 epochs in 3 minutes"), until the deadline.
# SEEDS="0,1,2" runs only step 4 for those seeds (BUDGET_S seconds at most).
# The device tool returns at most 8 files: run it as
#   D=$OUT; mkdir -p /tmp/res; OUT=/tmp/res bash bench/gpu.sh | tee $D/gpu.log; tar czf $D/results.tgz -C /tmp/res .
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-540} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
mkdir -p "$OUT/seeds" /tmp/ds/MNIST/raw
for f in .gpu_data/*.gz; do gunzip -c "$f" > /tmp/ds/MNIST/raw/"$(basename "$f" .gz)"; done
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$OUT/env.txt"

seeds_run() {  # $1 = comma-separated seeds, $2 = time limit (s)
  echo "== full recipe, seeds $1 at once (left $(left) s, limit $2 s)"
  timeout "$2" python3 bench/gpu_recipe.py --seeds "$1" --root /tmp/ds --out "$OUT/seeds" 2>&1 | grep -v "^\s*$" | tail -5
  for f in "$OUT"/seeds/*.jsonl; do echo "$f: $(tail -n 1 "$f" | cut -c1-120)"; done
}

if [ -n "${SEEDS:-}" ]; then
  seeds_run "$SEEDS" $(( $(left) - 10 ))
  exit 0
fi

echo "== 1. kernels per step (left $(left) s)"
for sets in "" "--set train.fused_g=false"; do
  timeout 60 python3 bench/kernels.py --device cuda $sets --out "$OUT" 2>&1 | grep -v "^\s*$" | head -8
done

echo "== 2. CUDA tests (left $(left) s)"
timeout 120 python3 -m pytest -q tests/test_cuda.py -k "not compile" -p no:cacheprovider 2>&1 | tail -6 | tee "$OUT/pytest.txt"

echo "== 3. throughput (left $(left) s)"
timeout 60 python3 bench/throughput.py --device cuda --models mlp --sizes "" --steps 500 --out "$OUT" 2>&1 | grep -E "mlp:|peak|Error"
timeout 60 python3 bench/throughput.py --device cuda --models mlp --sizes "" --steps 500 --set train.precision=tf32 --out "$OUT" 2>&1 | grep -E "mlp:|peak|Error"
timeout 60 python3 bench/throughput.py --device cuda --models mlp --sizes "" --steps 300 --set train.cuda_graph=false --out "$OUT" 2>&1 | grep -E "mlp:|Error"
timeout 90 python3 bench/throughput.py --device cuda --models mlp --sizes "" --steps 300 --stacked 3 --out "$OUT/seeds" 2>&1 | grep -E "mlp|Error"

echo "== 4."
seeds_run 0,1,2 $(( $(left) > 300 ? 300 : $(left) - 20 ))

echo "== 5. full recipe, seed 0 alone (left $(left) s)"
[ "$(left)" -gt 40 ] && timeout $(( $(left) - 10 )) python3 bench/gpu_recipe.py --seed 0 --root /tmp/ds --out "$OUT" 2>&1 | grep -v "^\s*$" | tail -3
tail -n 1 "$OUT/mnist-100-seed0.jsonl" 2>/dev/null | cut -c1-200
echo "done, $(left) s before the deadline"
