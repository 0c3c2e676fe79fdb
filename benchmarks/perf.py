"""Where the time goes: critic-step cost per constraint, the trainer against a bare loop, the
projection's share, FLOPs against the machine's matmul rate, and peak memory.

For the Table I MLP and the Table II DCGAN at batch 128 (128 real + 128 fake per critic step):

1. the machine's single-thread matmul rate (a large float32 matmul, GFLOP/s), and a large
   convolution's (oneDNN; on some CPUs, e.g. AMD with MKL, it beats sgemm, so a conv model can
   pass 100 % of the matmul rate);
2. per constraint (clip, invclip paper, invclip exact, gp, sn, ...): the median time of one
   critic step (generator forward for the fakes, critic forward/backward with the penalty if
   any, optimizer step, projection) and of its projection alone, in a bare loop written here;
   the model FLOPs of that step (PyTorch's per-op formulas of ``torch.utils.flop_counter``: matmuls and
   convolutions, forward and backward, double backward for penalties) and the fraction of the
   measured matmul rate it reaches;
3. the trainer (``wganlab.train.Trainer``, logging every 10 generator steps, no TensorBoard)
   against the bare loop on the same model, constraint, optimizer and schedule (n_critic
   critic steps per generator step), alternated and compared by the median time per generator
   step and by the total over the timed window;
4. the peak resident memory of each model's section (Linux VmHWM, reset between sections).

The machine is shared: everything runs on one thread (``torch.set_num_threads(1)``), times are
the thread's CPU clock (other processes do not inflate it) with wall times beside them,
comparisons are ratios measured in this one process, and the load average is recorded.

    OMP_NUM_THREADS=1 python benchmarks/perf.py            # ~5-8 minutes on a loaded 2-core box
    OMP_NUM_THREADS=1 python benchmarks/perf.py --quick    # a smoke run

Writes benchmarks/results/perf.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from wganlab.config import ConstraintConfig, DataConfig, ModelConfig, OptimizerConfig, load_config
from wganlab.constraints import build_constraint
from wganlab.data import load_images
from wganlab.models import build_models
from wganlab.train.optim import make_optimizer, resolve_optimizer

RESULTS = Path(__file__).resolve().parent / "results" / "perf.json"
BATCH = 128
Z_DIM = 100
#: seed 001's per-layer clipping bounds
BOUNDS = {"mlp": [0.035, 0.045, 0.0625], "dcgan": [0.05, 0.008, 0.006, 0.004]}
#: name -> constraint config keys
CONSTRAINTS = {
    "clip": {"name": "clip"},
    "invclip-paper": {"name": "invclip", "invclip": {"solver": "paper"}},
    "invclip-exact": {"name": "invclip", "invclip": {"solver": "exact"}},
    "gp": {"name": "gp"},
    "sn": {"name": "sn"},
}
#: (critic steps timed per constraint, generator steps per trainer/bare run, alternations)
PLAN = {"mlp": (30, 10, 4), "dcgan": (6, 2, 4)}
QUICK = {"mlp": (6, 3, 1), "dcgan": (2, 1, 1)}
N_CRITIC = 5


class FlopCount(TorchDispatchMode):
    """Model FLOPs of the ops run inside it (matmuls, convolutions, their backward), counted by
    PyTorch's own per-op formulas (``torch.utils.flop_counter``). A dispatch mode below
    autograd: unlike ``FlopCounterMode`` (whose module tracker refuses ``autograd.grad``), it
    also counts the penalties' double backward."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------------------- the machine

def matmul_gflops(n: int = 2048, reps: int = 5) -> dict:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    rates = []
    for _ in range(reps):
        t = time.thread_time()
        torch.mm(a, b)
        rates.append(2 * n ** 3 / max(time.thread_time() - t, 1e-9) / 1e9)
    return {"n": n, "gflops_median": median(rates), "gflops_best": max(rates)}


def conv_gflops(reps: int = 5) -> dict:
    """A large convolution's rate (PyTorch's oneDNN kernels; the DCGAN runs on these, and on
    some CPUs they beat the BLAS sgemm that ``torch.mm`` calls)."""
    x, w = torch.randn(256, 128, 8, 8), torch.randn(256, 128, 4, 4)
    flops = 2 * 256 * 4 * 4 * 256 * 128 * 16  # batch * out positions * out ch * in ch * k*k
    torch.nn.functional.conv2d(x, w, stride=2, padding=1)
    rates = []
    for _ in range(reps):
        t = time.thread_time()
        torch.nn.functional.conv2d(x, w, stride=2, padding=1)
        rates.append(flops / max(time.thread_time() - t, 1e-9) / 1e9)
    return {"shape": "256x128x8x8 * 256x128x4x4 /2", "gflops_median": median(rates),
            "gflops_best": max(rates)}


def peak_rss_reset() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) to the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- the bare loop

class Bare:
    """The reference: a plain PyTorch WGAN loop with the same model, constraint and optimizer
    as the trainer builds, no logging, no checks."""

    def __init__(self, model: str, constraint: str, images: torch.Tensor, seed: int = 0):
        torch.manual_seed(seed)
        self.G, self.C = build_models(ModelConfig(name=model), DataConfig(name="mnist5k"))
        cfg = ConstraintConfig.from_raw({"clip": {"bound": BOUNDS[model]},
                                         **CONSTRAINTS[constraint]})
        self.proj = build_constraint(self.C, cfg)
        spec = resolve_optimizer(OptimizerConfig(), self.proj.default_optimizer)
        self.opt_c = make_optimizer(self.C, spec)
        self.opt_g = make_optimizer(self.G, spec)
        self.images = images
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.data = torch.Generator().manual_seed(seed + 2)

    def real(self) -> torch.Tensor:
        idx = torch.randint(len(self.images), (BATCH,), generator=self.data)
        return self.images[idx]

    def z(self) -> torch.Tensor:
        return torch.randn(BATCH, Z_DIM, generator=self.noise)

    def critic_update(self) -> None:
        real = self.real()
        with torch.no_grad():
            fake = self.G(self.z())
        out = self.C(torch.cat([real, fake])).reshape(-1)
        loss = out[BATCH:].mean() - out[:BATCH].mean()
        pen = self.proj.penalty(real, fake)
        if pen is not None:
            loss = loss + pen
        self.opt_c.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_c.step()

    def project(self) -> None:
        self.proj.step(self.opt_c)

    def generator_update(self) -> None:
        self.C.requires_grad_(False)
        loss = -self.C(self.G(self.z())).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.C.requires_grad_(True)

    def timed_generator_steps(self, steps: int) -> list[tuple[float, float]]:
        """(cpu, wall) seconds of each generator step (N_CRITIC critic steps + 1 G step)."""
        out = []
        for _ in range(steps):
            c, w = time.process_time(), time.perf_counter()
            for _ in range(N_CRITIC):
                self.critic_update()
                self.project()
            self.generator_update()
            out.append((time.process_time() - c, time.perf_counter() - w))
        return out


def critic_step_costs(model: str, constraint: str, images: torch.Tensor, steps: int) -> dict:
    """Median CPU/wall time of a critic step and of its projection; FLOPs of one step."""
    bare = Bare(model, constraint, images)
    for _ in range(2 if model == "mlp" else 1):  # warm-up (allocator, first-call costs)
        bare.critic_update()
        bare.project()
    step_cpu, proj_cpu, step_wall, proj_wall = [], [], [], []
    for _ in range(steps):
        c0, w0 = time.thread_time(), time.perf_counter()
        bare.critic_update()
        c1, w1 = time.thread_time(), time.perf_counter()
        bare.project()
        c2, w2 = time.thread_time(), time.perf_counter()
        step_cpu.append(c2 - c0)
        proj_cpu.append(c2 - c1)
        step_wall.append(w2 - w0)
        proj_wall.append(w2 - w1)
    with FlopCount() as counter:
        bare.critic_update()
        bare.project()
    flops = counter.total
    return {"step_ms": 1e3 * median(step_cpu), "step_wall_ms": 1e3 * median(step_wall),
            "projection_ms": 1e3 * median(proj_cpu),
            "projection_wall_ms": 1e3 * median(proj_wall),
            "projection_share": median([p / s for p, s in zip(proj_cpu, step_cpu)]),
            "flops_per_step": flops, "steps_timed": steps}


# ----------------------------------------------------------------------------- the trainer

def trainer_config(model: str, constraint: str, generator_steps: int):
    keys = CONSTRAINTS[constraint]
    sets = [f"model.name={model}", "data.name=mnist5k", f"data.batch_size={BATCH}",
            f"train.generator_steps={generator_steps}", f"train.n_critic={N_CRITIC}",
            "train.warmup_generator_steps=0", "train.log_every=10", "train.tensorboard=false",
            "train.progress=false", "train.sample_every=100000", "train.threads=1",
            "train.diagnostics_every=0", f"constraint.clip.bound={BOUNDS[model]}",
            *(f"constraint.{k}={v}" for k, v in keys.items())]
    return load_config(None, sets)


def trainer_generator_steps(model: str, constraint: str, steps: int) -> list[tuple[float, float]]:
    """(cpu, wall) seconds of each of the trainer's generator steps after the first (the
    interval between consecutive end-of-generator-step callbacks, logging included)."""
    from wganlab.train import Trainer
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(trainer_config(model, constraint, steps + 1), Path(tmp) / "run")
        trainer.callbacks.append(
            lambda t, r: stamps.append((time.process_time(), time.perf_counter())))
        trainer.run()
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def trainer_vs_bare(model: str, constraint: str, images: torch.Tensor, steps: int,
                    rounds: int) -> dict:
    tr: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for r in range(rounds):  # alternate (ABBA), so that changes of machine load hit both
        for which in (("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")):
            if which == "trainer":
                tr += trainer_generator_steps(model, constraint, steps)
            else:
                b = Bare(model, constraint, images, seed=r)
                b.timed_generator_steps(1)  # warm-up
                bare += b.timed_generator_steps(steps)
    med = lambda xs, i: median([x[i] for x in xs])  # noqa: E731
    tot = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
    return {
        "generator_steps_timed": len(tr), "n_critic": N_CRITIC,
        "trainer_ms_per_gstep": 1e3 * med(tr, 0), "bare_ms_per_gstep": 1e3 * med(bare, 0),
        "ratio_median_cpu": med(bare, 0) / med(tr, 0),
        "ratio_mean_cpu": tot(bare, 0) / tot(tr, 0),
        "ratio_median_wall": med(bare, 1) / med(tr, 1),
        "trainer_critic_steps_per_s_cpu": (N_CRITIC + 0) / med(tr, 0),
        "bare_critic_steps_per_s_cpu": (N_CRITIC + 0) / med(bare, 0),
    }


# ----------------------------------------------------------------------------- main

def section(model: str, images: torch.Tensor, plan: tuple[int, int, int], rate: float,
            best: float, constraints: list[str], compare: list[str]) -> dict:
    reset = peak_rss_reset()
    steps, gsteps, rounds = plan
    out: dict = {"constraints": {}, "trainer_vs_bare": {}}
    for name in constraints:
        t = time.perf_counter()
        res = critic_step_costs(model, name, images, steps)
        achieved = res["flops_per_step"] / (res["step_ms"] / 1e3) / 1e9
        res["gflops_achieved"] = achieved
        res["matmul_fraction"] = achieved / rate
        res["best_kernel_fraction"] = achieved / best
        out["constraints"][name] = res
        print(f"  {model:5s} {name:14s} step {res['step_ms']:8.2f} ms cpu, projection "
              f"{100 * res['projection_share']:5.2f} %  ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr, flush=True)
    for name in compare:
        t = time.perf_counter()
        out["trainer_vs_bare"][name] = res = trainer_vs_bare(model, name, images, gsteps, rounds)
        print(f"  {model:5s} {name:14s} trainer/bare steps/s {res['ratio_median_cpu']:.3f} "
              f"(median) {res['ratio_mean_cpu']:.3f} (mean)  ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr, flush=True)
    out["peak_rss_mib"] = peak_rss_mib()
    out["peak_rss_scope"] = "this section (VmHWM reset)" if reset else "process (ru_maxrss)"
    return out


def targets(result: dict) -> dict:
    """Issue 8's targets: trainer >= 0.95x the bare loop's steps/s (median CPU time per
    generator step); projection <= 3 % of a critic step."""
    out = {}
    for model, sec in result["models"].items():
        for name, r in sec["trainer_vs_bare"].items():
            out[f"{model}/{name}/trainer>=0.95*bare"] = r["ratio_median_cpu"] >= 0.95
        for name, r in sec["constraints"].items():
            out[f"{model}/{name}/projection<=3%"] = r["projection_share"] <= 0.03
    return out


def table(result: dict) -> str:
    rate = result["machine"]["matmul"]["gflops_median"]
    lines = [f"machine: {result['machine']['cpu']}, torch {result['machine']['torch']}, "
             f"1 thread, matmul {result['machine']['matmul']['n']}^3: best "
             f"{result['machine']['matmul']['gflops_best']:.1f} GFLOP/s (median {rate:.1f}; "
             f"'% of matmul rate' is against the best); large conv (oneDNN): best "
             f"{result['machine']['conv']['gflops_best']:.1f} GFLOP/s; load average "
             f"{result['machine']['load_before']} -> {result['machine']['load_after']}",
             "",
             "| model | constraint | critic step (ms, cpu) | wall | projection (ms) | "
             "projection share | GFLOP/step | GFLOP/s | % of matmul rate | % of best kernel |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, sec in result["models"].items():
        for name, r in sec["constraints"].items():
            lines.append(f"| {model} | {name} | {r['step_ms']:.2f} | {r['step_wall_ms']:.2f} | "
                         f"{r['projection_ms']:.3f} | {100 * r['projection_share']:.2f} % | "
                         f"{r['flops_per_step'] / 1e9:.3f} | {r['gflops_achieved']:.1f} | "
                         f"{100 * r['matmul_fraction']:.1f} % | "
                         f"{100 * r['best_kernel_fraction']:.1f} % |")
    lines += ["", "| model | constraint | trainer ms / G-step | bare ms / G-step | "
              "trainer/bare steps/s (median, cpu) | (mean, cpu) | (median, wall) |",
              "|---|---|---|---|---|---|---|"]
    for model, sec in result["models"].items():
        for name, r in sec["trainer_vs_bare"].items():
            lines.append(f"| {model} | {name} | {r['trainer_ms_per_gstep']:.1f} | "
                         f"{r['bare_ms_per_gstep']:.1f} | {r['ratio_median_cpu']:.3f} | "
                         f"{r['ratio_mean_cpu']:.3f} | {r['ratio_median_wall']:.3f} |")
    lines += ["", "peak RSS: " + ", ".join(f"{m} {s['peak_rss_mib']:.0f} MiB"
                                            for m, s in result["models"].items())]
    missed = [k for k, ok in result.get("targets", {}).items() if not ok]
    lines += ["targets: " + ("all met" if not missed else "missed: " + ", ".join(missed))]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps only (smoke run)")
    ap.add_argument("--models", default="mlp,dcgan")
    ap.add_argument("--constraints", default=",".join(CONSTRAINTS))
    ap.add_argument("--compare", default="clip,invclip-exact",
                    help="constraints for the trainer-vs-bare comparison (mlp; dcgan: the first)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    images = load_images(DataConfig(name="mnist5k", batch_size=BATCH)).images
    mm = matmul_gflops()
    conv = conv_gflops()
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "matmul": mm, "conv": conv,
                          "load_before": load_before},
              "batch": BATCH, "n_critic": N_CRITIC, "quick": args.quick,
              "data": "mnist5k (4,500 embedded training digits, 32x32)",
              "times": "medians of the thread's CPU clock unless named wall",
              "models": {}}
    print(f"matmul {mm['gflops_best']:.1f} GFLOP/s (best), load {load_before}", file=sys.stderr)
    compare = [c for c in args.compare.split(",") if c]
    for model in args.models.split(","):
        plan = (QUICK if args.quick else PLAN)[model]
        result["models"][model] = section(model, images, plan, mm["gflops_best"],
                                          max(mm["gflops_best"], conv["gflops_best"]),
                                          args.constraints.split(","),
                                          compare if model == "mlp" else compare[:1])
    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\n({result['seconds']} s; written to {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
