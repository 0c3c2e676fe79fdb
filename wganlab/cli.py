"""The ``wganlab`` command: train, and the subcommands the other floors provide."""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .config import load_config
from .errors import CompareError, WganlabError


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer
    from .train import checkpoint as ck

    ckpt = None
    if args.resume:
        ckpt, source_run = ck.find_checkpoint(args.resume)
        # the checkpoint's own config unless --config is given; --set applies to either
        config = (load_config(args.config, args.set) if args.config
                  else ck.resume_config(ckpt, args.set))
        out = Path(args.out) if args.out else source_run
    else:
        config = load_config(args.config, args.set)
        out = Path(args.out) if args.out else Path("runs") / _default_name(args.config, config)
    if args.device:
        config.train.device = args.device
    # under torchrun: join the process group (gloo on CPU, nccl on CUDA); else (0, 1, device)
    from .train import distributed
    rank, world, device = distributed.init_from_env(config.train.device, config.data.batch_size)
    out = Path(distributed.main_value(str(out)))  # rank 0's default name (it holds a time)
    say = (lambda msg: print(msg, file=sys.stderr)) if rank == 0 else (lambda msg: None)
    if ckpt is not None:
        ck.check_resume(ckpt, config, requested=args.resume, source_run=source_run, out=out,
                        force=args.force_resume)
    with _claimed(out, rank, source=source_run if ckpt else None,
                  checkpoint=ckpt.path if ckpt else None, overwrite=args.overwrite):
        trainer = Trainer(config, out, rank=rank, world=world, device=device)
        if ckpt is not None:
            for turn in (False, True):  # the other ranks read the run before rank 0 rewrites it
                if (rank == 0) == turn:
                    ck.restore(trainer, ckpt, source_run=source_run)
                distributed.barrier()
            say(f"wganlab: resuming {out} from {ckpt.path.name} (generator step "
                f"{ckpt.generator_step})")
        say(f"wganlab: training {config.model.name} on {config.data.name} with "
            f"constraint {trainer.constraint.name} -> {out}"
            + (f" ({world} processes)" if world > 1 else ""))
        record = trainer.run()
    w = record.get("w_estimate")
    say(f"wganlab: done at generator step {trainer.generator_step} "
        f"(critic step {trainer.critic_step}, {trainer.clock.wall():.1f} s"
        + (f", W estimate {w:.4g}" if w is not None else "") + f"); outputs in {out}")
    return 0


@contextmanager
def _claimed(out: Path, rank: int, **claim) -> Iterator[None]:
    """Rank 0 locks and claims the run folder for every rank (rundir.py); its refusal stops
    them all."""
    from .train import distributed, rundir
    with ExitStack() as held:
        error = None
        if rank == 0:
            try:
                held.enter_context(rundir.locked(out))
                rundir.claim(out, **claim)
            except WganlabError as e:
                error = e
        if distributed.main_value(error is not None):
            raise error or rundir.RunFolderError(f"rank 0 could not claim {out}")
        yield


def _compare(args: argparse.Namespace) -> int:
    from .report.compare import Plan, Threshold, execute, report_only
    from .report.launch import visible_gpus

    try:
        if args.report_only and not args.config:
            report_only(Path(args.out))
            print(f"wganlab: report rewritten in {args.out}", file=sys.stderr)
            return 0
        if not args.config:
            raise CompareError("--config is required (unless --report-only)")
        budget = {"generator_steps": args.generator_steps, "budget_seconds": args.budget_seconds,
                  "budget_cpu_seconds": args.budget_cpu_seconds}
        if sum(v is not None for v in budget.values()) != 1:
            raise CompareError("give exactly one budget: --budget-seconds, "
                               "--budget-cpu-seconds or --generator-steps")
        sets = args.set + ([f"train.device={args.device}"] if args.device else [])
        gpus = visible_gpus() if args.device in ("cuda", "auto") else []
        plan = Plan(config=args.config, out=Path(args.out), budget=budget, sets=sets,
                    constraints=[c.strip() for c in args.constraints.split(",") if c.strip()],
                    seeds=[int(s) for s in args.seeds.split(",") if s.strip()],
                    threads=args.threads,
                    thresholds=[Threshold.parse(t) for t in args.threshold],
                    final_eval=not args.no_final_eval, final_eval_samples=args.eval_samples,
                    jobs=args.jobs, gpus=gpus if len(gpus) > 1 else [],
                    launcher=args.launcher, cluster=args.cluster,
                    submitit=submitit_params(args))
        execute(plan, log=lambda m: print(f"wganlab compare: {m}", file=sys.stderr, flush=True),
                train=not args.report_only)
    except CompareError as e:
        print(f"wganlab: compare error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wganlab: compare interrupted; the runs in flight were stopped (they resume "
              f"from their checkpoints): run the same command again to finish {args.out}",
              file=sys.stderr)
        return 130
    print(f"wganlab: comparison written to {args.out} (report.md, results.json, plots/)",
          file=sys.stderr)
    return 0


def submitit_params(args: argparse.Namespace) -> dict:
    """The SLURM options of ``compare`` as submitit AutoExecutor parameters (unset: left out)."""
    extra = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CompareError(f"--slurm expects KEY=VALUE (e.g. --slurm qos=high), got {item!r}")
        extra[key.strip()] = value
    params = {"slurm_partition": args.partition, "timeout_min": args.timeout_min,
              "cpus_per_task": args.cpus_per_task, "gpus_per_node": args.gpus_per_task,
              "slurm_additional_parameters": extra or None}
    return {k: v for k, v in params.items() if v is not None}


def _eval(args: argparse.Namespace) -> int:
    from .report.evaluate import run_eval
    run_eval(Path(args.run), checkpoint=args.checkpoint, samples=args.samples, seed=args.seed)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .report.plots import run_plot
    paths = run_plot([Path(r) for r in args.run], out=Path(args.out) if args.out else None,
                     checkpoint=args.checkpoint)
    for path in paths:
        print(path)
    return 0


def _w1bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from .report.w1bench import CONSTRAINTS, BenchSettings, markdown, run_bench, summarise
    from .data.w1pairs import w1_pairs

    out = Path(args.out)
    if args.report_only:
        if not out.is_file():
            raise ValueError(f"--report-only: {out} does not exist; run the benchmark first")
        results = json.loads(out.read_text())
        results["summary"] = summarise(results["runs"])
    else:
        torch.set_num_threads(args.threads)
        results = run_bench(out, _names(args.constraints) or list(CONSTRAINTS),
                            _names(args.tasks) or list(w1_pairs()),
                            [int(x) for x in _names(args.seeds)],
                            BenchSettings(steps=args.steps),
                            log=lambda m: print(f"wganlab w1bench: {m}", file=sys.stderr,
                                                flush=True))
    print(markdown(results))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    """Every registered constraint, solver and data set: its config keys with their defaults,
    and its capabilities."""
    import dataclasses

    from .plugins import CONSTRAINTS, DATASETS, SOLVERS

    def keys(plug, section: str) -> str:
        if plug.params is None:
            return ""
        return ", ".join(f"{section}.{f.name}={getattr(plug.params(), f.name)!r}"
                         for f in dataclasses.fields(plug.params))

    for title, reg, section in (("constraints", CONSTRAINTS, "constraint.{}"),
                                ("rescaling solvers (constraint.invclip.solver)", SOLVERS,
                                 "constraint.solvers.{}")):
        print(f"{title}:")
        for plug in reg:
            caps = f" [{', '.join(sorted(plug.capabilities))}]" if plug.capabilities else ""
            uses = f" (also reads constraint.{', '.join(plug.uses)})" if plug.uses else ""
            print(f"  {plug.name}{caps}{uses}")
            if plug.params is not None:
                print(f"      {keys(plug, section.format(plug.name))}")
    print("data sets (data.name):")
    for plug in DATASETS:
        spec = plug.obj
        print(f"  {plug.name}: {spec.kind}" + (", reads data.dir" if spec.needs_dir else ""))
    return 0


def _names(text: Optional[str]) -> list[str]:
    """A comma-separated command-line list, blanks dropped."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _default_name(config_path: Optional[str], config) -> str:
    import time
    stem = Path(config_path).stem if config_path else "run"
    return f"{stem}-{config.constraint.name}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wganlab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one WGAN run")
    t.add_argument("--config", "-c", help="YAML config file or preset name (toy, mnist_mlp, ...)")
    t.add_argument("--out", "-o", help="run directory (default runs/<config>-<constraint>-...)")
    t.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set constraint.name=gp (repeatable)")
    t.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override train.device")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its newest valid checkpoint (or from the "
                   "checkpoint folder DIR); its config is used unless --config is given, "
                   "--set may change the stopping keys (e.g. train.generator_steps)")
    t.add_argument("--force-resume", action="store_true",
                   help="resume even though the config differs in keys that change training, "
                   "or the data files differ from those the run was trained on")
    t.add_argument("--overwrite", action="store_true",
                   help="train into a --out that holds something else: wganlab's outputs "
                   "there are replaced, other files left alone")
    t.set_defaults(func=_train)
    c = sub.add_parser("compare", help="train several constraints x seeds at equal budget "
                       "and write a report")
    c.add_argument("--config", "-c", help="YAML config file or preset name")
    c.add_argument("--constraints", default="clip", help="comma-separated constraint names "
                   "or variants of the config (the first is the baseline)")
    c.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    c.add_argument("--budget-seconds", type=float, help="training wall seconds per run")
    c.add_argument("--budget-cpu-seconds", type=float, help="training CPU seconds per run")
    c.add_argument("--generator-steps", type=int, help="generator steps per run")
    c.add_argument("--out", "-o", required=True, help="comparison folder (resumed if it exists)")
    c.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every run (repeatable)")
    c.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    c.add_argument("--jobs", "-j", type=int, help="runs at a time (default: usable cores / "
                   "--threads; with --device cuda and several GPUs, one per GPU)")
    c.add_argument("--device", choices=["cpu", "cuda", "auto"],
                   help="train.device of every run; on CUDA each local job gets its own GPU")
    c.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: a process pool on this machine; submitit: one job per run "
                   "(SLURM, or submitit's local executor where there is none; "
                   "pip install 'wganlab[slurm]')")
    c.add_argument("--cluster", choices=["slurm", "local"],
                   help="submitit's executor (default: slurm where srun exists, else local)")
    c.add_argument("--partition", help="SLURM partition (submitit)")
    c.add_argument("--timeout-min", type=int, help="time limit per run in minutes (submitit)")
    c.add_argument("--cpus-per-task", type=int, help="CPUs per run (submitit; default --threads)")
    c.add_argument("--gpus-per-task", type=int, help="GPUs per run (submitit)")
    c.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch parameter, e.g. --slurm qos=high (repeatable, submitit)")
    c.add_argument("--threshold", action="append", default=[], metavar="METRIC<VALUE",
                   help="report time to reach it, e.g. eval/w1<0.05 (repeatable)")
    c.add_argument("--eval-samples", type=int, default=2000,
                   help="samples for the final evaluation of each run")
    c.add_argument("--no-final-eval", action="store_true",
                   help="skip evaluating each final generator")
    c.add_argument("--report-only", action="store_true",
                   help="train nothing: report on the finished runs (with --config and "
                   "the other arguments) or re-render an existing results.json (without)")
    c.set_defaults(func=_compare)
    pg = sub.add_parser("plugins", help="list the registered constraints, rescaling solvers "
                        "and data sets with their config keys and capabilities")
    pg.set_defaults(func=_plugins)
    e = sub.add_parser("eval", help="score a run's generator: exact W1 on toy data, "
                       "classifier-feature metrics on images; prints a table, writes eval.json")
    e.add_argument("--run", required=True, help="run directory")
    e.add_argument("--checkpoint", help="a checkpoint folder, 'latest', or a .safetensors "
                   "generator file (default: the run's final weights)")
    e.add_argument("--samples", type=int, help="generated samples (default train.eval_samples)")
    e.add_argument("--seed", type=int, default=0, help="seed of the latents and metric subsets")
    e.set_defaults(func=_eval)
    pl = sub.add_parser("plot", help="metric curves vs generator step and wall time for one "
                        "or more runs (and toy scatter + critic contour)")
    pl.add_argument("--run", nargs="+", required=True, help="run directories")
    pl.add_argument("--out", help="output folder (default RUN/plots, or ./plots for several)")
    pl.add_argument("--checkpoint", help="checkpoint for the toy scatter (default final)")
    pl.set_defaults(func=_plot)
    w = sub.add_parser("w1bench", help="W1-estimation benchmark: a critic alone under each "
                       "constraint on distribution pairs with known W1; prints the tables")
    w.add_argument("--out", "-o", default="w1bench.json",
                   help="results JSON (resumed if it exists with the same settings)")
    w.add_argument("--constraints", help="comma-separated (default: all of them)")
    w.add_argument("--tasks", help="comma-separated pair names (default: all of them)")
    w.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    w.add_argument("--steps", type=int, default=500, help="critic steps per training")
    w.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    w.add_argument("--report-only", action="store_true",
                   help="train nothing: print the tables of an existing --out")
    w.set_defaults(func=_w1bench)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="wganlab: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        from .train.checkpoint import RunInterrupted
        if isinstance(e, RunInterrupted):
            run = e.checkpoint.parent.parent if e.checkpoint is not None else None
            hint = f"; continue with: wganlab train --resume {run}" if run is not None else ""
            print(f"wganlab: {e}{hint}", file=sys.stderr)
            return e.exit_code
        print("wganlab: interrupted", file=sys.stderr)
        return 130
    except (WganlabError, ValueError, OSError) as e:  # ours name the key or the file
        print(f"wganlab: error: {' '.join(str(e).split())}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # others: e.g. a model unfit for the data, a full disk
