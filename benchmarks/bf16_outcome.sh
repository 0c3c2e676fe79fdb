#!/usr/bin/env bash
# fp32 vs bf16 autocast, Table I MLP on full MNIST, 1,000 generator steps a run, seeds 0-5,
# one single-thread run at a time; seed by seed, so that the pairs finished so far are complete.
# Then benchmarks/bf16_outcome.py pairs them. Resumable (finished runs are kept).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bf16_outcome}
MNIST_DIR=${MNIST_DIR:-../shared/data/mnist}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
seeds=""
for s in ${SEEDS:-0 1 2 3 4 5}; do
  seeds="${seeds:+$seeds,}$s"
  for amp in false bf16; do
    $PY -m wganlab compare --config mnist_mlp --constraints clip --seeds "$seeds" --jobs 1 \
      --generator-steps 1000 --set data.name=mnist --set data.dir="$MNIST_DIR" \
      --set train.warmup_generator_steps=5 --set train.tensorboard=false \
      --set train.amp=$amp --out "$OUT/$amp"
  done
done
$PY benchmarks/bf16_outcome.py "$OUT"
