#!/usr/bin/env bash
# Issue 33: MNIST with 100 labels at an equal CPU budget of 15 minutes per run, split seeds 0-2, one run at a
# time with both threads of the machine (THREADS=2). Each network method trains with a config of its own sized
# to finish inside the budget; LabelSpreading fits once per split. The runs go seed by seed, every method
# of a seed before the next seed, so that the host's drift (±20 % within minutes) falls on all methods alike.
# Everything lands in one MLflow experiment (bench/results/mlflow.db, experiment mnist-budget);
# bench/mnist_budget_table.py turns it into the time-to-accuracy table of docs/results/compare.md.
#   METHODS="ssgan vat mean_teacher supervised" SEEDS="0 1 2" LABEL_SPREADING=1 bash bench/mnist_budget.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
URI="sqlite:///$(pwd)/bench/results/mlflow.db"
DATA=${SSGAN_DATA:-../shared/datasets}
config_of() {
  case $1 in
    ssgan|supervised) echo configs/mnist-100-fast.yaml ;;
    vat) echo configs/mnist-100-vat.yaml ;;
    mean_teacher) echo configs/mnist-100-mean-teacher.yaml ;;
    *) echo "error: unknown method $1 in METHODS (ssgan, vat, mean_teacher, supervised)" >&2; exit 2 ;;
  esac
}
for method in ${METHODS-ssgan vat mean_teacher supervised}; do config_of "$method" > /dev/null; done  # all known, before any run
for seed in ${SEEDS:-0 1 2}; do
  for method in ${METHODS-ssgan vat mean_teacher supervised}; do  # METHODS="" : LabelSpreading alone
    OMP_NUM_THREADS=$THREADS .venv/bin/ssgan -q train -c "$(config_of "$method")" --mode "$method" \
      --set data.root="$DATA" --set data.split_seed="$seed" --set train.seed="$seed" \
      --set tracking.uri="$URI" --set tracking.experiment=mnist-budget --set tracking.run_name="$method-seed$seed" \
      --out "bench/results/mnist-budget/$method-seed$seed"
  done
done
if [ "${LABEL_SPREADING:-1}" = 1 ]; then  # split seeds 0..N-1 of a comparison, N = the number of SEEDS
  set -- ${SEEDS:-0 1 2}
  OMP_NUM_THREADS=$THREADS .venv/bin/ssgan -q compare -c configs/mnist-100-fast.yaml --methods label_spreading \
    --labels 100 --seeds $# --set data.root="$DATA" --set tracking.uri="$URI" --set tracking.experiment=mnist-budget \
    --out bench/results/mnist-budget/label_spreading
fi
