#!/usr/bin/env bash
# The controlled study of docs/reproduction.md §6: does invariance-aware clipping beat plain
# clipping, and if so why? Table I MLP on full MNIST, 300 CPU-s of training per run, one
# thread per run. Each block is one or more `wganlab compare` calls (resumable: re-running a
# block skips finished runs). Two blocks can run at once, one per core:
#
#   bash benchmarks/study.sh tune       # the retuning grid for plain clipping, seeds 100-101
#   bash benchmarks/study.sh main       # clip, bounded, rebalanced, retuned, balance, gp; 10-21
#   CONTROL=$(python benchmarks/study_tables.py --best-control)  # lowest median FD, main block
#   CONTROL=<best control> bash benchmarks/study.sh fashion   # replication, Fashion-MNIST
#   CONTROL=<best control> bash benchmarks/study.sh digits    # replication, embedded digits
#   bash benchmarks/study.sh sensitivity       # max_drift 0.02 and 0.5 (0.1: the main block's)
#   bash benchmarks/study.sh dcgan-budget      # Table II: clip's generator steps to FD < 500
#   STEPS=<that step> JOBS=2 bash benchmarks/study.sh dcgan   # the 3 x 3 block at that step
#   python benchmarks/study_tables.py   # the tables of §6 from the results so far
#
# Outputs: $OUT/<block>/ (default runs/study), results.json, report.md, plots/. The main block
# runs in groups of two seeds ($OUT/main/s10-11, ...), each with its own results.json, so that
# finished groups can be kept under benchmarks/results/ while later ones run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/study}
MNIST_DIR=${MNIST_DIR:-../shared/data/mnist}
SEED_GROUPS=${SEED_GROUPS:-10,11 12,13 14,15 16,17 18,19 20,21}
TUNE_SEEDS=${TUNE_SEEDS:-100,101}
RETUNED=${RETUNED:-clip-x0.8}  # the retuning grid's choice (lowest mean FD on the tuning seeds)
REPLICATION_SEEDS=${REPLICATION_SEEDS:-10,11,12,13,14,15}
FASHION_DIR=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}  # Debian: dataset-fashion-mnist
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}
BLOCK=${1:-}; shift || true
EXTRA=("$@")

# layer_lr for a tilt t: [e^t, 1, e^-t] (the learning-rate half of what a rescaling by e^t of
# both hidden layers does to RMSProp's steps; the clip half is in the clip-tilt* variants)
declare -A TILT_LR=([clip-tilt-0.1]="[0.904837,1.0,1.105171]"
                    [clip-tilt0.1]="[1.105171,1.0,0.904837]"
                    [clip-tilt0.2]="[1.221403,1.0,0.818731]")

study() {  # study <constraints> <seeds> <out> [--set ...]
  local cons=$1 seeds=$2 out=$3; shift 3
  $PY -m wganlab compare --config mnist_mlp --constraints "$cons" --seeds "$seeds" \
    --budget-cpu-seconds "${STUDY_CPU:-300}" --out "$out" \
    --set train.tensorboard=false --set train.progress=false --threads 1 --jobs "${JOBS:-1}" \
    --set data.name=mnist --set data.dir="$MNIST_DIR" \
    --set train.warmup_generator_steps=5 --set train.eval_every=500 \
    --set train.eval_samples=1000 --set train.sample_every=250 --set train.diagnostics_every=0 \
    --set train.log_every=25 \
    --eval-samples 2000 --threshold "eval/fd<500" --threshold "eval/fd<200" \
    "$@" "${EXTRA[@]}"
}

arm() {  # arm <name> <seeds> <out> [--set ...]: one arm; a clip-tilt* one with its layer_lr
  local name=$1 seeds=$2 out=$3; shift 3
  local lr=()
  [ -n "${TILT_LR[$name]:-}" ] && lr=(--set "optim.critic.layer_lr=${TILT_LR[$name]}")
  study "$name" "$seeds" "$out" "$@" "${lr[@]}"
}

replicate() {  # replicate <block> [--set ...]: clip, bounded and $CONTROL on another data set
  local block=$1; shift
  : "${CONTROL:?set CONTROL to the best control arm of the main block}"
  study clip,invclip-exact-bounded "$REPLICATION_SEEDS" "$OUT/$block" "$@"
  arm "$CONTROL" "$REPLICATION_SEEDS" "$OUT/$block-control" "$@"
}

# the DCGAN blocks' common set-up: the paper's model, full MNIST, no warm-up, an eval every $CHUNK
CHUNK=${CHUNK:-250} FD_OK=${FD_OK:-500} MAX_STEPS=${MAX_STEPS:-4000}
DCGAN_KEYS=(--set data.name=mnist --set data.dir="$MNIST_DIR" --set train.amp="${AMP:-false}"
            --set train.tensorboard=false --set train.progress=false
            --set train.warmup_generator_steps=0 --set train.warmup_every=0
            --set train.diagnostics_every=0 --set train.log_every=25
            --set train.sample_every="$CHUNK" --set train.eval_every="$CHUNK"
            --set train.eval_samples=1000)

dcgan_chunk() {  # dcgan_chunk <constraint> <dir> <generator steps>: one seed-0 run, trained or
  local cons=$1 d=$2 steps=$3  # resumed up to that many generator steps
  if [ -d "$d/checkpoints" ]; then
    $PY -m wganlab train --resume "$d" --set train.generator_steps="$steps"
  else
    $PY -m wganlab train --config mnist_dcgan --out "$d" --set train.generator_steps="$steps" \
      "${DCGAN_KEYS[@]}" --set train.threads=1 --set constraint.name="$cons" --set seed=0 \
      "${EXTRA[@]}"
  fi
}

case "$BLOCK" in
  tune)
    study clip,clip-x0.8,clip-x1.25 "$TUNE_SEEDS" "$OUT/tune-scale"
    for a in clip-tilt0.1 clip-tilt-0.1 clip-tilt0.2; do
      arm "$a" "$TUNE_SEEDS" "$OUT/tune-$a"
    done ;;
  main)  # the retuned arm runs here too, so every arm shares the seeds' interleaved order
    [ -z "${TILT_LR[$RETUNED]:-}" ] || { echo "a tilt arm needs arm(); run it alone" >&2; exit 2; }
    for g in $SEED_GROUPS; do
      study "clip,invclip-exact-bounded,clip-rebalanced,$RETUNED,invclip-balance,gp" "$g" \
        "$OUT/main/s${g/,/-}"
    done ;;
  fashion)  # the data set is set after the common MNIST keys: the last --set wins
    replicate fashion --set data.name=fashion-mnist --set data.dir="$FASHION_DIR" ;;
  digits)
    replicate digits --set data.name=mnist5k --set data.dir=null ;;
  sensitivity)  # max_drift 0.1 and clip on these seeds are the main block's runs
    study invclip-exact-bounded-0.02,invclip-exact-bounded-0.5 \
      "$REPLICATION_SEEDS" "$OUT/sensitivity" ;;
  dcgan-budget)  # Table II on CPU, plain clipping, seed 0, the set-up of gpu_dcgan.sh: train
    # in chunks of $CHUNK generator steps (each a resume of the same run) until the scheduled
    # eval FD drops below $FD_OK or $MAX_STEPS is reached; prints the step. Resumable.
    d=$OUT/dcgan-budget-clip-s0
    while :; do
      read -r done hit < <($PY benchmarks/fd_reached.py "$d/metrics.jsonl" "$FD_OK")
      if [ "$hit" -gt 0 ]; then echo "dcgan-budget: eval FD < $FD_OK at generator step $hit"; break; fi
      next=$(( (done / CHUNK + 1) * CHUNK ))
      if [ "$next" -gt "$MAX_STEPS" ]; then echo "dcgan-budget: no FD < $FD_OK by step $done"; break; fi
      dcgan_chunk clip "$d" "$next"
    done ;;
  dcgan)  # Table II: clip, invclip-paper and bounded on seeds 0-2 at $STEPS generator steps (the
    # budget search's answer), the budget run's set-up and evals; `compare` resumes partial runs
    : "${STEPS:?set STEPS to the generator step the dcgan-budget block printed}"
    $PY -m wganlab compare --config mnist_dcgan \
      --constraints clip,invclip-paper,invclip-exact-bounded --seeds "${DCGAN_SEEDS:-0,1,2}" \
      --generator-steps "$STEPS" --out "$OUT/dcgan-block" --threads 1 --jobs "${JOBS:-1}" \
      "${DCGAN_KEYS[@]}" --eval-samples 2000 --threshold "eval/fd<$FD_OK" \
      "${EXTRA[@]}" ;;
  *) echo "usage: $0 tune|main|fashion|digits|sensitivity|dcgan-budget|dcgan [compare options]" >&2
     exit 2 ;;
esac
