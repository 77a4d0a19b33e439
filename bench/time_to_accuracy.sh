#!/usr/bin/env bash
# Issue 5: MNIST with 100 labels in a CPU time budget. configs/mnist-100-fast.yaml (22 epochs of
# batch 50) for split seeds 0 1 2, one after the other, tracked in bench/results/mlflow.db; each run's
# summary.json (test accuracy, training seconds) lands in bench/results/time-to-accuracy/seedN/.
# THREADS=2 uses both cores (default); THREADS=1 when another job shares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
for seed in ${SEEDS:-0 1 2}; do
  OMP_NUM_THREADS=$THREADS .venv/bin/ssgan -q train -c configs/mnist-100-fast.yaml \
    --set data.split_seed=$seed --set train.seed=$seed \
    --set "tracking.uri=sqlite:///$(pwd)/bench/results/mlflow.db" --set tracking.experiment=time-to-accuracy \
    --out bench/results/time-to-accuracy/seed$seed
done
