#!/usr/bin/env bash
# Reproduction of seed 001 (invariance-aware weight clipping) at a CPU budget, as numbers.
# The exact commands behind docs/reproduction.md. Each block is one `wganlab compare`: every
# (constraint, seed) pair trained in its own single-thread subprocess at the same budget, the
# order interleaved across seeds, $JOBS runs at a time (default: one per core), resumable
# (re-running a block skips finished runs).
#
#   bash benchmarks/reproduce.sh toy      # 8 and 25 Gaussians, every constraint, exact W1
#   bash benchmarks/reproduce.sh mlp      # Table I MLP on full MNIST, equal CPU time
#   bash benchmarks/reproduce.sh dcgan    # Table II DCGAN on full MNIST, a small CPU budget
#   bash benchmarks/reproduce.sh mlp-long     # Table I at 300 CPU-s a run
#   bash benchmarks/reproduce.sh dcgan-long   # Table II, 120 generator steps a run
#   SEEDS=0,1,2,3,4,5 bash benchmarks/reproduce.sh mlp-long-extra   # bounded drift (after mlp-long)
#   bash benchmarks/reproduce.sh w1             # W1 estimation, every constraint (docs/w1.md)
#   bash benchmarks/reproduce.sh mlp-lipschitz  # Table I: clip vs bjorck vs aol, 150 CPU-s a run
#   bash benchmarks/reproduce.sh all
#
# Outputs go to $OUT (default runs/reproduction/<block>/): results.json, report.md, plots/.
# MNIST is read from $MNIST_DIR (default ../shared/data/mnist, as on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/reproduction}
MNIST_DIR=${MNIST_DIR:-../shared/data/mnist}
SEEDS=${SEEDS:-0,1,2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-python}

# common: no TensorBoard, no progress bar, one thread a run, $JOBS runs at a time
QUIET=(--set train.tensorboard=false --set train.progress=false --threads 1 ${JOBS:+--jobs "$JOBS"})
# arguments after the block name go to every compare, e.g. --report-only to report on the
# runs finished so far without training more
BLOCK=${1:-all}; shift || true
EXTRA=("$@")

toy() {
  # every constraint the registry lists (none excluded), the preset's invclip variants.
  # Changed from the preset to fit the budget: 128-unit toy MLPs (preset 256), 15 CPU-s a run.
  local data=$1
  local cons=clip,invclip-paper,invclip-exact,invclip-exact-state,gp,lp,r1,gp-adaptive,sn
  $PY -m wganlab compare --config toy --constraints "$cons" --seeds "$SEEDS" \
    --budget-cpu-seconds "${TOY_CPU:-15}" --out "$OUT/toy-$data" "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=$data --set model.toy_hidden=128 --set train.eval_every=100 \
    --set train.eval_samples=1000 --set train.sample_every=200 --set train.diagnostics_every=0 \
    --set train.log_every=20 \
    --eval-samples 2000 --threshold "eval/w1<0.5" --threshold "eval/w1<0.2"
}

toy_long() {
  # 8 Gaussians again at 4x the CPU budget (60 s): clipping vs invclip only (time ran short)
  $PY -m wganlab compare --config toy --constraints clip,invclip-paper,invclip-exact \
    --seeds "$SEEDS" --budget-cpu-seconds "${TOY_LONG_CPU:-60}" --out "$OUT/toy-8gaussians-long" \
    "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=8gaussians --set model.toy_hidden=128 --set train.eval_every=250 \
    --set train.eval_samples=1000 --set train.sample_every=500 --set train.diagnostics_every=0 \
    --set train.log_every=50 \
    --eval-samples 2000 --threshold "eval/w1<0.5" --threshold "eval/w1<0.2"
}

mlp_compare() {
  # Table I at equal CPU time. Changed from the paper to fit the budget: the 100-critic-step
  # warm-up covers only the first 5 generator steps (paper: 100 epochs; original WGAN: 25).
  local cons=$1 seeds=$2 out=$3
  $PY -m wganlab compare --config mnist_mlp --constraints "$cons" \
    --seeds "$seeds" --budget-cpu-seconds "${MLP_CPU:-50}" --out "$out" "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=mnist --set data.dir="$MNIST_DIR" \
    --set train.warmup_generator_steps=5 --set train.eval_every=200 \
    --set train.eval_samples=1000 --set train.sample_every=50 --set train.diagnostics_every=0 \
    --set train.log_every=10 \
    --eval-samples 2000 --threshold "eval/fd<500" --threshold "eval/fd<200"
}

mlp() {
  mlp_compare clip,invclip-paper,invclip-exact,gp "$SEEDS" "$OUT/mlp"
}

mlp_state() {
  # the optimizer-state transform, each beside its untransformed twin
  local seeds=${STATE_SEEDS:-$SEEDS} r s
  mkdir -p "$OUT/mlp-state/runs"
  for r in invclip-paper invclip-exact; do  # the same runs as in mlp: reuse, don't retrain
    for s in ${seeds//,/ }; do
      if [ -f "$OUT/mlp/runs/$r-s$s/generator.safetensors" ] && [ ! -e "$OUT/mlp-state/runs/$r-s$s" ]; then
        cp -r "$OUT/mlp/runs/$r-s$s" "$OUT/mlp-state/runs/"
      fi
    done
  done
  mlp_compare invclip-paper,invclip-paper-state,invclip-exact,invclip-exact-state \
    "$seeds" "$OUT/mlp-state"
}

dcgan() {
  # Table II at a CPU budget that allows only ~15 generator steps: no warm-up (n_critic 5
  # throughout), otherwise the paper's clip values, RMSProp 2e-4, batch 128.
  $PY -m wganlab compare --config mnist_dcgan --constraints clip,invclip-paper \
    --seeds "$SEEDS" --budget-cpu-seconds "${DCGAN_CPU:-20}" --out "$OUT/dcgan" "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=mnist --set data.dir="$MNIST_DIR" \
    --set train.warmup_generator_steps=0 --set train.warmup_every=0 \
    --set train.eval_every=0 --set train.sample_every=5 \
    --set train.diagnostics_every=0 --set train.log_every=5 \
    --eval-samples 2000
}

mlp_long() {
  # Table I at a budget where plain clipping draws digits: 300 CPU-s a run (≈ 3,000 generator
  # steps)
  local seeds=${1:-$SEEDS} out=${2:-$OUT/mlp-long}
  $PY -m wganlab compare --config mnist_mlp \
    --constraints "${MLP_LONG_CONSTRAINTS:-clip,invclip-paper,invclip-exact,invclip-exact-state,gp}" \
    --seeds "$seeds" --budget-cpu-seconds "${MLP_LONG_CPU:-300}" --out "$out" "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=mnist --set data.dir="$MNIST_DIR" \
    --set train.warmup_generator_steps=5 --set train.eval_every=500 \
    --set train.eval_samples=1000 --set train.sample_every=250 --set train.diagnostics_every=0 \
    --set train.log_every=25 \
    --eval-samples 2000 --threshold "eval/fd<500" --threshold "eval/fd<200" --threshold "eval/fd<100"
}

dcgan_long() {
  # Table II per generator step: 120 generator steps (600 critic steps, ≈ 4.5 CPU-min) a run, no
  # warm-up (the paper's 100-critic-step warm-up alone would be 2,500 critic steps ≈ 18 CPU-min).
  local seeds=${1:-$SEEDS} out=${2:-$OUT/dcgan-long}
  $PY -m wganlab compare --config mnist_dcgan \
    --constraints "${DCGAN_LONG_CONSTRAINTS:-clip,invclip-paper,invclip-exact-bounded}" \
    --seeds "$seeds" --generator-steps "${DCGAN_LONG_STEPS:-120}" --out "$out" "${QUIET[@]}" "${EXTRA[@]}" \
    --set data.name=mnist --set data.dir="$MNIST_DIR" \
    --set train.warmup_generator_steps=0 --set train.warmup_every=0 \
    --set train.eval_every=40 --set train.eval_samples=1000 --set train.sample_every=40 \
    --set train.diagnostics_every=0 --set train.log_every=5 \
    --eval-samples 2000 --threshold "eval/fd<500"
}

mlp_long_extra() {
  # beyond the paper, same set-up as mlp-long: the accumulated rescaling bounded (max_drift
  # 0.1) for the exact and the output-aware solvers; clip runs reused from mlp-long as baseline
  local s src
  mkdir -p "$OUT/mlp-long-extra/runs"
  for s in ${SEEDS//,/ }; do
    src=$OUT/mlp-long/runs/clip-s$s
    if [ -f "$src/generator.safetensors" ] && [ ! -e "$OUT/mlp-long-extra/runs/clip-s$s" ]; then
      cp -r "$src" "$OUT/mlp-long-extra/runs/"
    fi
  done
  MLP_LONG_CONSTRAINTS=${EXTRA_CONSTRAINTS:-clip,invclip-exact-bounded,invclip-output-bounded} \
    mlp_long "$SEEDS" "$OUT/mlp-long-extra"
}

w1() {
  # a critic alone on pairs with known W1, every constraint, 3 seeds, 500 critic steps each;
  # writes benchmarks/results/w1_estimation.json and prints the tables of docs/w1.md
  $PY -m wganlab w1bench --out benchmarks/results/w1_estimation.json --seeds "$SEEDS" \
    --steps "${W1_STEPS:-500}" "${EXTRA[@]}"
}

mlp_lipschitz() {
  # the by-construction critics as arms of the Table I comparison (150 CPU-s a run)
  MLP_CPU=${MLP_CPU:-150} mlp_compare "${LIP_CONSTRAINTS:-clip,bjorck,aol}" "${LIP_SEEDS:-0}" \
    "$OUT/mlp-lipschitz"
}

case "$BLOCK" in
  toy) toy 8gaussians; toy 25gaussians ;;
  toy8) toy 8gaussians ;;
  toy25) toy 25gaussians ;;
  toy8-long) toy_long ;;
  mlp) mlp ;;
  mlp-state) mlp_state ;;
  dcgan) dcgan ;;
  mlp-long) mlp_long ;;
  dcgan-long) dcgan_long ;;
  mlp-long-extra) mlp_long_extra ;;
  w1) w1 ;;
  mlp-lipschitz) mlp_lipschitz ;;
  all) toy 8gaussians; toy 25gaussians; toy_long; mlp; mlp_state; dcgan ;;
  *) echo "usage: $0 [toy|toy8|toy25|toy8-long|mlp|mlp-state|dcgan|mlp-long|dcgan-long|mlp-long-extra|w1|mlp-lipschitz|all]" >&2; exit 2 ;;
esac
