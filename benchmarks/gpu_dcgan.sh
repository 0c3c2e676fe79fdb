#!/usr/bin/env bash
# The Table II DCGAN block of docs/reproduction.md §6 on one GPU, in at most ~9 minutes.
#
# Phase 1 (one seed, plain clipping): train with an evaluation every 250 generator steps and
# report the first step at which the classifier-feature FD drops below $FD_OK (recognisable
# digits; about where the Table I MLP draws them). Phase 2: clip, invclip-paper and
# invclip-exact-bounded on 3 seeds at that many generator steps (or $STEPS), three runs at a
# time on the one GPU. bf16 autocast for the forward passes (train.amp), as the device allows.
#
# Where it runs: from the repository root on a machine with CUDA and PyTorch; full MNIST IDX
# files in $MNIST_DIR (on the project's device machine, copy them into an ignored folder that
# travels, e.g. `mkdir -p .gpu_data && cp ../shared/data/mnist/* .gpu_data/` with
# `echo /.gpu_data/ >> .git/info/exclude`, then carry `.gpu_data` and set
# MNIST_DIR=.gpu_data). Results (results.json, report.md, a log) go to $OUT (default
# runs/gpu-dcgan); on the device machine set OUT=$OUT so that they come back.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-dcgan}
MNIST_DIR=${MNIST_DIR:-../shared/data/mnist}
PY=${PY:-python3}
FD_OK=${FD_OK:-500}
MAX_STEPS=${MAX_STEPS:-4000}      # phase 1 gives up here
JOBS=${JOBS:-3}
AMP=${AMP:-bf16}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

COMMON=(--set data.name=mnist --set data.dir="$MNIST_DIR" --set train.device="${DEVICE:-cuda}"
        --set train.amp="$AMP" --set train.tensorboard=false --set train.progress=false
        --set train.warmup_generator_steps=0 --set train.warmup_every=0
        --set train.diagnostics_every=0 --set train.log_every=25 --set train.sample_every=250)

if [ -z "${STEPS:-}" ]; then
  timeout "${PHASE1_TIMEOUT:-240}" $PY -m wganlab train --config mnist_dcgan "${COMMON[@]}" \
    --set constraint.name=clip --set seed=0 --set train.generator_steps="$MAX_STEPS" \
    --set train.eval_every=250 --set train.eval_samples=1000 \
    --out "$OUT/phase1-clip-s0" 2>&1 | tail -n 5 || true   # a timeout still leaves its evals
  read -r _ STEPS < <($PY benchmarks/fd_reached.py "$OUT/phase1-clip-s0/metrics.jsonl" "$FD_OK")
  [ "$STEPS" -gt 0 ] || STEPS=$MAX_STEPS
  echo "phase 1: clipping reaches FD < $FD_OK at generator step $STEPS (cap $MAX_STEPS)" \
    | tee "$OUT/phase1.txt"
fi

$PY -m wganlab compare --config mnist_dcgan \
  --constraints clip,invclip-paper,invclip-exact-bounded --seeds 0,1,2 \
  --generator-steps "$STEPS" --jobs "$JOBS" --out "$OUT/phase2" "${COMMON[@]}" \
  --set train.eval_every=500 --set train.eval_samples=1000 \
  --eval-samples 2000 --threshold "eval/fd<$FD_OK" 2>&1 | tee "$OUT/phase2.log"
cp "$OUT/phase2/results.json" "$OUT/phase2/report.md" "$OUT/" 2>/dev/null || true
