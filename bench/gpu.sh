#!/usr/bin/env bash
# Issue 5's CUDA checks and GPU benchmarks, in one call on a lent GPU machine (torch from its image, no
# MLflow there). MNIST's raw files travel gzipped in .gpu_data/ (not in git: `gzip -k` them there from
# ../shared/datasets/MNIST/raw); results go to $OUT (the device tool's output folder) or bench/results/gpu.
#   1. configs/mnist-100.yaml, full 300 epochs, split seed 0, alone on the GPU (the timing that counts);
#   2. the CUDA tests (graph replay == eager step, graphed fit == eager fit, bf16/compile on a GPU);
#   3. bench/throughput.py: MLP and conv steps/s, eager vs CUDA graph vs bf16 vs compile;
#   4. seeds 1 and 2 of the full recipe side by side, until the deadline (their wall times are shared).
# SEEDS="1 2" runs only the full recipe for those seeds, one after the other (each alone on the GPU).
# The device tool returns at most 8 files: run it as
#   D=$OUT; mkdir -p /tmp/res; OUT=/tmp/res bash bench/gpu.sh | tee $D/gpu.log; tar czf $D/results.tgz -C /tmp/res .
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-540} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
mkdir -p "$OUT" /tmp/ds/MNIST/raw
for f in .gpu_data/*.gz; do gunzip -c "$f" > /tmp/ds/MNIST/raw/"$(basename "$f" .gz)"; done
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$OUT/env.txt"

if [ -n "${SEEDS:-}" ]; then
  for s in $SEEDS; do
    [ "$(left)" -gt 30 ] || break
    echo "== full recipe, seed $s (left $(left) s)"
    timeout $(( $(left) - 10 )) python3 bench/gpu_recipe.py --seed "$s" --root /tmp/ds --out "$OUT" 2>&1 | tail -3
  done
  exit 0
fi

echo "== 1. full recipe, seed 0 (left $(left) s)"
timeout 300 python3 bench/gpu_recipe.py --seed 0 --root /tmp/ds --out "$OUT" 2>&1 | grep -v "^\s*$" | tail -5

echo "== 2. CUDA tests (left $(left) s)"
timeout 200 python3 -m pytest -q tests/test_cuda.py tests/test_train.py -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/pytest.txt"

echo "== 3. throughput (left $(left) s)"
timeout 60 python3 bench/throughput.py --device cuda --models mlp --steps 500 --out "$OUT" 2>&1 | grep -E "mlp:|peak|Error"
for sets in "--set train.cuda_graph=false" "--set train.precision=bf16" "--set train.precision=bf16 --set train.cuda_graph=false" \
            "--set train.compile=true --set train.cuda_graph=false" "--set train.compile=true --set train.cuda_graph=true"; do
  [ "$(left)" -gt 220 ] || break
  timeout 120 python3 bench/throughput.py --device cuda --models mlp,conv --sizes "" --steps 500 $sets --out "$OUT" 2>&1 | grep -E "mlp:|conv:|peak|Error" | tail -4
done
timeout 60 python3 bench/throughput.py --device cuda --models conv --sizes "" --steps 200 --out "$OUT" 2>&1 | grep -E "conv:|Error"

echo "== 4. seeds 1 and 2 side by side (left $(left) s)"
for s in 1 2; do
  [ "$(left)" -gt 60 ] || break
  timeout $(( $(left) - 15 )) python3 bench/gpu_recipe.py --seed $s --root /tmp/ds --out "$OUT" > "$OUT/seed$s.log" 2>&1 &
done
wait
tail -n 2 "$OUT"/seed*.log
for s in 0 1 2; do tail -n 1 "$OUT/mnist-100-seed$s.jsonl" 2>/dev/null | cut -c1-300; done
echo "done, $(left) s before the deadline"
