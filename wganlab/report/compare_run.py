"""Running a comparison: launch (or resume) every run of a :class:`~.compare_plan.Plan`, tell
finished runs from partial ones, evaluate the final generators in a subprocess, gather
results.json and write the report and plots.

Each run is a separate ``python -m wganlab train`` subprocess (threads isolated, a crash or a
diverged run cannot take the comparison down), ``plan.jobs`` at a time on a local process pool
or as submitit (SLURM) jobs (launch.py). A half-finished comparison resumes: finished runs are
kept, partial ones resumed from their checkpoint or re-run.

``python -m wganlab.report.compare_run final-eval N_SAMPLES RUN_DIR...`` is the final
evaluation's subprocess (:func:`final_evals`).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..atomic import atomic_write, atomic_write_json
from ..config import load_config
from ..errors import CheckpointError, CompareError, inside
from ..train.checkpoint import latest_checkpoint
from ..metrics.records import read_metrics
from ..train.rundir import locked
from ..train.threads import usable_cpus
from .compare_plan import Plan, default_jobs, run_name, run_order, validate
from .compare_report import render_report
from .compare_stats import columns, final_values, summarise, time_to_threshold
from .launch import LocalPool, SubmititLauncher, Task, run_all
from .progress import Progress

# ----------------------------------------------------------------------------- run state

def run_complete(run_dir: Path) -> bool:
    """Final weights and a metrics.jsonl whose last line is whole: the trainer writes the
    weights after its last record, so together they mean the run reached its budget."""
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "generator.safetensors").is_file() or not metrics.is_file():
        return False
    text = metrics.read_text(encoding="utf-8")
    if not text.endswith("\n") or not text.strip():
        return False
    try:
        json.loads(text.strip().splitlines()[-1])
    except json.JSONDecodeError:
        return False
    return True


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether a partial run left a valid checkpoint to resume from."""
    try:
        latest_checkpoint(run_dir, warn=False)
    except (CheckpointError, OSError):  # none written, or none valid: re-run instead
        return False
    return True


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def machine_info() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(),
            "platform": platform.platform(), "python": platform.python_version(),
            "hostname": platform.node()}


# ----------------------------------------------------------------------------- running

def execute(plan: Plan, log=print, train: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole comparison, then write results.json, report.md and plots.

    The runs still to do go to the plan's launcher, ``plan.jobs`` at a time. ``train=False``
    trains nothing: it reports on the runs finished so far (e.g. when the time for a
    comparison ran out), still retrying failed final evaluations. Training holds the
    comparison folder's lock: a second ``compare`` on the same ``--out`` fails at once, naming
    the holder (a report-only call does not wait for it)."""
    validate(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    with (locked(plan.out) if train else nullcontext()):
        return _execute(plan, log, train)


def _execute(plan: Plan, log, train: bool) -> dict[str, Any]:
    (plan.out / "logs").mkdir(exist_ok=True)
    info_path = plan.out / "run_info.json"
    infos: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    order = run_order(plan.constraints, plan.seeds)
    names = {run_name(c, s) for c, s in order}
    tasks: list[Task] = []
    for i, (c, s) in enumerate(order, 1):
        name = run_name(c, s)
        run_dir = plan.out / "runs" / name
        if run_complete(run_dir) and name in infos and infos[name].get("rc") == 0:
            log(f"[{i}/{len(order)}] {name}: done before, kept")
            continue
        if run_complete(run_dir):
            log(f"[{i}/{len(order)}] {name}: finished run found, kept")
            infos[name] = {**infos.get(name, {}), "rc": 0, "note": "found finished"}
        elif not train:
            log(f"[{i}/{len(order)}] {name}: not finished, left out (--report-only)")
        else:
            tasks.append(prepare_run(plan, c, s, run_dir))
    atomic_write_json(info_path, infos)
    if tasks:
        _launch(plan, tasks, infos, info_path, log)
    if plan.final_eval:  # missing or failed before: (re)tried
        todo = [n for n, v in infos.items() if v.get("rc") == 0 and n in names
                and "error" in v.get("final_eval", {"error": "not yet"})]
        if todo:
            log(f"evaluating {len(todo)} final generator(s)")
            res = final_evals([plan.out / "runs" / n for n in todo], plan.final_eval_samples,
                              log)
            for n in todo:
                infos[n]["final_eval"] = res.get(str(plan.out / "runs" / n),
                                                 {"error": "no result"})
            atomic_write_json(info_path, infos)
    results = collect(plan, infos)
    write_outputs(plan, results)
    return results


def _launch(plan: Plan, tasks: list[Task], infos: dict[str, Any], info_path: Path,
            log) -> None:
    """Run ``tasks`` on the plan's launcher, recording each in run_info.json as it ends."""
    launcher = make_launcher(plan)
    progress = Progress(len(tasks), launcher.slots, log=log)
    started: dict[str, tuple[float, list[float]]] = {}

    def on_start(task: Task) -> None:
        started[task.name] = (time.time(), _load())
        progress.say(f"{task.name}: {'resuming' if task.resumed else 'training'} "
                     f"({launcher.name})")

    def on_done(task: Task, rc: int, seconds: float) -> None:
        t0, load_before = started[task.name]
        infos[task.name] = run_info(task, rc, t0, load_before, seconds)
        if rc != 0:
            progress.say(f"{task.name}: FAILED (exit {rc}): {infos[task.name]['error']}")
        atomic_write_json(info_path, infos)

    run_all(tasks, launcher, on_done, progress, on_start=on_start)


def make_launcher(plan: Plan):
    jobs = plan.jobs or default_jobs(plan)
    if plan.launcher == "submitit":
        params = {"cpus_per_task": plan.threads, **plan.submitit}
        try:
            return SubmititLauncher(plan.out / "submitit", jobs, params, plan.cluster)
        except (ImportError, ValueError) as e:
            raise CompareError(f"--launcher submitit: {e}") from None
    return LocalPool(jobs, plan.gpus)


def prepare_run(plan: Plan, constraint: str, seed: int, run_dir: Path) -> Task:
    """The training command of one run: resumed from its checkpoint if it has one, started
    afresh (its partial folder removed) if not."""
    name = run_name(constraint, seed)
    cmd = [sys.executable, "-m", "wganlab", "train", "--config", plan.config,
           "--out", str(run_dir)]
    for item in plan.run_sets(constraint, seed):
        cmd += ["--set", item]
    resumed = False
    if run_dir.exists():
        if _has_checkpoint(run_dir):
            cmd += ["--resume", str(run_dir)]
            resumed = True
        elif (run_dir / "config.yaml").is_file() or (run_dir / "metrics.jsonl").is_file():
            with locked(run_dir):  # partial, no checkpoint: start again (unless it is live)
                shutil.rmtree(inside(plan.out, run_dir))
        else:
            raise CompareError(f"{run_dir} exists but is not a run directory; remove it")
    env = {"OMP_NUM_THREADS": str(plan.threads), "MKL_NUM_THREADS": str(plan.threads)}
    return Task(name, cmd, env, plan.out / "logs" / f"{name}.log", resumed)


def run_info(task: Task, rc: int, t0: float, load_before: list[float],
             seconds: float) -> dict[str, Any]:
    """What run_info.json keeps of one finished run (and results.json reports)."""
    info = {"command": task.cmd, "rc": rc, "resumed": task.resumed, "load_before": load_before,
            "load_after": _load(), "duration_s": round(seconds, 2),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))}
    if rc != 0:
        tail = task.log_path.read_text(errors="replace")[-600:] if task.log_path.is_file() else ""
        info["error"] = tail.strip().splitlines()[-1] if tail.strip() else f"exit {rc}"
    return info


# ----------------------------------------------------------------------------- final evaluation

def final_evals(run_dirs: list[Path], n_samples: int, log=print) -> dict[str, dict]:
    """Metrics of each final generator, the same way for every run (fixed latents, n samples),
    whether or not the trainer evaluated on a schedule. One subprocess for all of them: it
    reads the runs' configs with the package as installed now, not as imported when a long
    comparison began, and pays the start-up once."""
    if not run_dirs:
        return {}
    cmd = [sys.executable, "-m", "wganlab.report.compare_run", "final-eval", str(n_samples),
           *map(str, run_dirs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        log(f"final evaluation failed: {err}")
        return {str(d): {"error": err} for d in run_dirs}
    out = json.loads(lines[-1])
    for d, res in out.items():
        if "error" in res:
            log(f"final evaluation of {d} failed: {res['error']}")
    return out


def _final_eval_here(run_dir: Path, n_samples: int) -> dict[str, float]:
    import torch
    from safetensors.torch import load_file

    from ..metrics.suite import evaluate, generator_sampler
    from ..models import build_models
    torch.set_num_threads(1)
    cfg = load_config(run_dir / "config.yaml")
    generator, _ = build_models(cfg.model, cfg.data)
    generator.load_state_dict(load_file(str(run_dir / "generator.safetensors")))
    res = evaluate(generator_sampler(generator, cfg.model.z_dim, seed=0), cfg.data,
                   n_samples, seed=0)
    return {k.replace("eval/", "final/", 1): float(v) for k, v in res.items()}


def final_eval_main(argv: list[str]) -> None:
    """The final-evaluation subprocess: one JSON line {run_dir: metrics or {"error": ...}}."""
    if len(argv) < 3 or argv[0] != "final-eval":
        sys.exit("usage: python -m wganlab.report.compare_run final-eval N_SAMPLES RUN_DIR...")
    out = {}
    for d in argv[2:]:
        try:
            out[d] = _final_eval_here(Path(d), int(argv[1]))
        except Exception as e:  # one broken run must not hide the others' results
            out[d] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


# ----------------------------------------------------------------------------- results

def collect(plan: Plan, infos: dict[str, Any]) -> dict[str, Any]:
    """Everything the report needs, from the run directories and run_info."""
    runs = []
    for c, s in run_order(plan.constraints, plan.seeds):
        name = run_name(c, s)
        run_dir = plan.out / "runs" / name
        info = infos.get(name, {})
        entry: dict[str, Any] = {"name": name, "constraint": c, "seed": s,
                                 "run_dir": str(run_dir.relative_to(plan.out)), **info}
        ok = info.get("rc") == 0 and run_complete(run_dir)
        entry["ok"] = ok
        if ok:
            records = read_metrics(run_dir / "metrics.jsonl")
            entry["series"] = columns(records)
            entry["final"] = final_values(records, info.get("final_eval", {}))
            entry["thresholds"] = {str(t): time_to_threshold(entry["series"], t)
                                   for t in plan.thresholds}
            entry["samples"] = sorted(p.name for p in (run_dir / "samples").glob("step_*.png"))
        runs.append(entry)
    return {
        "config": plan.config, "constraints": plan.constraints, "seeds": plan.seeds,
        "baseline": plan.constraints[0], "budget": plan.budget, "sets": plan.sets,
        "threads": plan.threads, "jobs": plan.jobs or default_jobs(plan),
        "launcher": plan.launcher, "time_axis": plan.time_axis(),
        "thresholds": [str(t) for t in plan.thresholds], "machine": machine_info(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs,
        "summary": summarise(runs, plan.constraints),
    }


def write_outputs(plan: Plan, results: dict[str, Any]) -> None:
    """Plots, results.json and report.md in ``plan.out``."""
    _write_report(plan.out, results)


def report_only(out: Path) -> dict[str, Any]:
    """Re-render report.md and the plots from an existing results.json."""
    path = out / "results.json"
    if not path.is_file():
        raise CompareError(f"no results.json in {out}")
    results = json.loads(path.read_text())
    _write_report(out, results)
    return results


def _write_report(out: Path, results: dict[str, Any]) -> None:
    from .compare_plots import plot_metrics, plot_samples  # matplotlib: only when writing
    plots = {"metrics": plot_metrics(results, out)}
    plots.update(plot_samples(results, out))
    results["plots"] = plots
    atomic_write_json(out / "results.json", results)
    atomic_write(out / "report.md", render_report(results, plots))


if __name__ == "__main__":
    final_eval_main(sys.argv[1:])
