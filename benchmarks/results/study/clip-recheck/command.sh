# Plain clipping on §4b's seeds 0 and 3 with the study's code, 1,000 generator steps, the §4
# set-up: is §4b's slow clip a property of those seeds or of the code version of §4b?
# (eval FD at generator steps 500 and 1,000 in metrics.jsonl; run from the repository root)
for s in 0 3; do
  OMP_NUM_THREADS=1 python -m wganlab train --config mnist_mlp --out runs/clip-recheck/clip-s$s \
    --set train.tensorboard=false --set train.progress=false \
    --set data.name=mnist --set data.dir=../shared/data/mnist \
    --set train.warmup_generator_steps=5 --set train.eval_every=500 --set train.eval_samples=1000 \
    --set train.sample_every=250 --set train.diagnostics_every=0 --set train.log_every=25 \
    --set train.generator_steps=1000 --set train.threads=1 --set constraint.name=clip --set seed=$s
done
