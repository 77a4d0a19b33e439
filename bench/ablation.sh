#!/usr/bin/env bash
# Issue-3 ablations (docs/results/ablations.md). digits-20: every trick that applies to the MLP, 5 seeds.
# MNIST-100: the tricks that mattered most on digits, 1 epoch, 2 seeds (CPU budget).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
URI="sqlite:///$(pwd)/bench/results/mlflow.db"
case "${1:-digits}" in
  digits)
    $BIN/ssgan -q ablate -c configs/digits-20.yaml --seeds 5 --out bench/results/ablation-digits-20 \
      --tricks label_smoothing,label_flip,gaussian_noise,noise_anneal,dropout,warmup,sgd,lr_decay,ema,feature_matching,leaky_relu,explicit_fake_logit,data_init,tanh_range,d_spectral_norm,d_no_norm,g_layer_norm,conditional \
      --set tracking.uri="$URI" --set tracking.experiment=ablation-digits-20 --set tracking.log_model=false ;;
  mnist)
    $BIN/ssgan -q ablate -c configs/mnist-100.yaml --seeds 2 --out bench/results/ablation-mnist-100 \
      --tricks "${TRICKS:-gaussian_noise,label_smoothing,feature_matching}" \
      --set train.epochs=1 --set tracking.uri="$URI" --set tracking.experiment=ablation-mnist-100 \
      --set tracking.log_model=false --set tracking.sample_every=0 ;;
esac
