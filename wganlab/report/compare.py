"""Equal-budget comparisons of constraints: run every (constraint, seed) pair, then summarise.

Each run is a separate ``python -m wganlab train`` subprocess (threads isolated, a crash or a
diverged run cannot take the comparison down), started in an order that interleaves
constraints across seeds so that slow drift of a shared machine favours no constraint, and
``--jobs`` at a time on a local process pool or as submitit (SLURM) jobs (launch.py). A
half-finished comparison resumes: finished runs are kept, partial ones resumed or re-run.

Outputs in ``--out``: ``runs/<constraint>-s<seed>/`` (ordinary run directories), ``logs/``,
``results.json`` (everything measured), ``report.md`` (medians, spreads, verdicts) and plots.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError, load_config
from ..errors import inside, unsafe_name, CompareError  # noqa: F401
from ..train.rundir import locked
from ..train.logger import read_metrics
from ..train.threads import usable_cpus
from .launch import LocalPool, SubmititLauncher, Task, run_all
from .progress import Progress

#: metric (without "eval/"/"final/") -> which way is better; others get no verdict
DIRECTION = {
    "w1": "lower", "fd": "lower", "kid": "lower", "class_kl": "lower", "mode_kl": "lower",
    "modes_hit": "higher", "high_quality": "higher", "precision": "higher", "recall": "higher",
    "coverage": "higher", "is": "higher",
}
#: keys of a metrics record that are x axes, not metrics
AXES = ("generator_step", "critic_step", "wall_time", "cpu_time")
#: series plotted besides the eval/ ones
EXTRA_SERIES = ("w_estimate",)
#: final values that describe cost, reported beside the metrics
COST_KEYS = ("generator_step", "critic_step", "wall_time", "cpu_time",
             "ms_per_critic_step_wall", "ms_per_critic_step_cpu")


@dataclass
class Threshold:
    """'first time a metric crosses a value', parsed from e.g. ``eval/w1<0.05``."""
    key: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Threshold":
        m = re.fullmatch(r"\s*([\w/.\-]+)\s*([<>])\s*([-+0-9.eE]+)\s*", text)
        if not m:
            raise CompareError(f"--threshold expects METRIC<VALUE or METRIC>VALUE "
                               f"(e.g. eval/w1<0.05), got {text!r}")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def met(self, v: Optional[float]) -> bool:
        if v is None or not math.isfinite(v):
            return False
        return v < self.value if self.op == "<" else v > self.value

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value:g}"


@dataclass
class Plan:
    """What to compare: one config, named constraints, seeds, one budget for all."""
    config: str
    constraints: list[str]
    seeds: list[int]
    out: Path
    budget: dict[str, Any]
    sets: list[str] = field(default_factory=list)
    threads: int = 1
    thresholds: list[Threshold] = field(default_factory=list)
    final_eval: bool = True
    final_eval_samples: int = 2000
    #: runs at a time (None: default_jobs); the GPUs a local pool hands out, one per slot
    jobs: Optional[int] = None
    gpus: list[str] = field(default_factory=list)
    #: local (a process pool) or submitit; submitit's cluster (None: SLURM if present) and
    #: its AutoExecutor parameters (timeout_min, cpus_per_task, slurm_partition, ...)
    launcher: str = "local"
    cluster: Optional[str] = None
    submitit: dict[str, Any] = field(default_factory=dict)

    def budget_sets(self) -> list[str]:
        """--set items that make ``budget`` the only stopping rule."""
        keys = ("generator_steps", "critic_steps", "budget_seconds", "budget_cpu_seconds")
        return [f"train.{k}={self.budget.get(k) if self.budget.get(k) is not None else 'null'}"
                for k in keys]

    def run_sets(self, constraint: str, seed: int) -> list[str]:
        # ours last: they win over the user's --set
        return [*self.sets, *self.budget_sets(), f"train.threads={self.threads}",
                f"constraint.name={constraint}", f"seed={seed}"]

    def time_axis(self) -> str:
        return "cpu_time" if self.budget.get("budget_cpu_seconds") else "wall_time"


def run_order(constraints: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Seed-major, the constraint order rotated by one per seed: each constraint runs early on
    some seeds and late on others, so drifting machine load favours none."""
    n = len(constraints)
    out = []
    for i, s in enumerate(seeds):
        k = i % n
        out += [(c, s) for c in constraints[k:] + constraints[:k]]
    return out


def run_name(constraint: str, seed: int) -> str:
    return f"{constraint}-s{seed}"


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


def _train_supports_resume() -> bool:
    """Whether ``wganlab train`` has a ``--resume`` flag (the checkpoint feature)."""
    from ..cli import build_parser
    parser = build_parser()
    for action in parser._actions:  # argparse keeps subparsers here; no public accessor
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and "train" in choices:
            return any("--resume" in a.option_strings for a in choices["train"]._actions)
    return False


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether a partial run left a valid checkpoint to resume from."""
    try:
        from ..train import checkpoint as ck
        ck.latest_checkpoint(run_dir, warn=False)
    except Exception:  # no checkpoint feature, none written, or none valid: re-run instead
        return False
    return True


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def machine_info() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "platform": platform.platform(),
            "python": platform.python_version(), "hostname": platform.node()}


# ----------------------------------------------------------------------------- running

def execute(plan: Plan, log=print, train: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole comparison, then write results.json, report.md and plots.

    The runs still to do go to the plan's launcher, ``plan.jobs`` at a time. ``train=False`` trains nothing: it reports on the runs finished
    so far (e.g. when the time for a comparison ran out), still retrying failed final
    evaluations."""
    validate(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "logs").mkdir(exist_ok=True)
    info_path = plan.out / "run_info.json"
    infos: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    resume_ok = _train_supports_resume()
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
            tasks.append(prepare_run(plan, c, s, run_dir, resume_ok))
    _write_json(info_path, infos)
    if tasks:
        launcher = make_launcher(plan)
        progress = Progress(len(tasks), launcher.slots, log=log)
        started: dict[str, tuple[float, list[float]]] = {}

        def on_start(task: Task) -> None:
            started[task.name] = (time.time(), _load())
            progress.say(f"{task.name}: {'resuming' if task.resumed else 'training'} "
                         f"({launcher.name})")

        def on_done(task: Task, rc: int, seconds: float) -> None:
            t0, load_before = started[task.name]
            infos[task.name] = run_info(plan, task, rc, t0, load_before, seconds)
            if rc != 0:
                progress.say(f"{task.name}: FAILED (exit {rc}): {infos[task.name]['error']}")
            _write_json(info_path, infos)

        run_all(tasks, launcher, on_done, progress, on_start=on_start)
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
            _write_json(info_path, infos)
    results = collect(plan, infos)
    write_outputs(plan, results)
    return results


def default_jobs(plan: Plan) -> int:
    """Runs at a time: one per GPU on CUDA, else the usable cores divided by the threads of
    a run (at least one); on submitit, every run at once (the scheduler queues them)."""
    if plan.launcher == "submitit":
        return len(plan.constraints) * len(plan.seeds)
    if plan.gpus:
        return len(plan.gpus)
    return max(1, usable_cpus() // max(1, plan.threads))


def make_launcher(plan: Plan):
    jobs = plan.jobs or default_jobs(plan)
    if plan.launcher == "submitit":
        params = {"cpus_per_task": plan.threads, **plan.submitit}
        try:
            return SubmititLauncher(plan.out / "submitit", jobs, params, plan.cluster)
        except (ImportError, ValueError) as e:
            raise CompareError(f"--launcher submitit: {e}") from None
    return LocalPool(jobs, plan.gpus)


def prepare_run(plan: Plan, constraint: str, seed: int, run_dir: Path,
                resume_ok: bool) -> Task:
    """The training command of one run: resumed from its checkpoint if it has one, started
    afresh (its partial folder removed) if not."""
    name = run_name(constraint, seed)
    cmd = [sys.executable, "-m", "wganlab", "train", "--config", plan.config,
           "--out", str(run_dir)]
    for item in plan.run_sets(constraint, seed):
        cmd += ["--set", item]
    resumed = False
    if run_dir.exists():
        if resume_ok and _has_checkpoint(run_dir):
            cmd += ["--resume", str(run_dir)]
            resumed = True
        elif (run_dir / "config.yaml").is_file() or (run_dir / "metrics.jsonl").is_file():
            with locked(run_dir):  # partial, no checkpoint: start again (unless it is live)
                shutil.rmtree(inside(plan.out, run_dir))
        else:
            raise CompareError(f"{run_dir} exists but is not a run directory; remove it")
    env = {"OMP_NUM_THREADS": str(plan.threads), "MKL_NUM_THREADS": str(plan.threads)}
    return Task(name, cmd, env, plan.out / "logs" / f"{name}.log", resumed)


def run_info(plan: Plan, task: Task, rc: int, t0: float, load_before: list[float],
             seconds: float) -> dict[str, Any]:
    """What run_info.json keeps of one finished run (and results.json reports)."""
    info = {"command": task.cmd, "rc": rc, "resumed": task.resumed, "load_before": load_before,
            "load_after": _load(), "duration_s": round(seconds, 2),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))}
    if rc != 0:
        tail = task.log_path.read_text(errors="replace")[-600:] if task.log_path.is_file() else ""
        info["error"] = tail.strip().splitlines()[-1] if tail.strip() else f"exit {rc}"
    return info


def final_evals(run_dirs: list[Path], n_samples: int, log=print) -> dict[str, dict]:
    """Metrics of each final generator, the same way for every run (fixed latents, n samples),
    whether or not the trainer evaluated on a schedule. One subprocess for all of them: it
    reads the runs' configs with the package as installed now, not as imported when a long
    comparison began, and pays the start-up once."""
    if not run_dirs:
        return {}
    cmd = [sys.executable, "-m", "wganlab.report.compare", "final-eval", str(n_samples),
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


def validate(plan: Plan) -> None:
    """Fail before any run: every constraint name must build a valid config."""
    if not plan.constraints:
        raise CompareError("--constraints is empty")
    if not plan.seeds:
        raise CompareError("--seeds is empty")
    if len(set(plan.constraints)) != len(plan.constraints):
        raise CompareError(f"--constraints has duplicates: {plan.constraints}")
    if plan.jobs is not None and plan.jobs < 1:
        raise CompareError(f"--jobs must be >= 1 (got {plan.jobs})")
    if plan.launcher not in ("local", "submitit"):
        raise CompareError(f"--launcher must be local or submitit (got {plan.launcher!r})")
    for c in plan.constraints:
        if unsafe_name(c):  # it names a folder under --out
            raise CompareError(f"constraint {c!r} is not a safe name: use letters, digits and "
                               ". _ + - (starting with a letter or digit, no '..')")
        try:
            load_config(plan.config, plan.run_sets(c, plan.seeds[0]))
        except ConfigError as e:
            raise CompareError(f"constraint {c!r} with this config: {e}") from None


# ----------------------------------------------------------------------------- results

def columns(records: list[dict[str, Any]]) -> dict[str, list]:
    """Records -> {key: [value or None per record]} (compact and plot-ready)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in records] for k in keys}


def final_values(records: list[dict[str, Any]], eval_res: dict[str, float]) -> dict[str, float]:
    """The last value of every logged key, the final evaluation, and the cost per step."""
    out: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = float(v)
    out.update({k: v for k, v in eval_res.items() if isinstance(v, float)})
    c = out.get("critic_step") or 0
    if c:
        out["ms_per_critic_step_wall"] = 1000 * out.get("wall_time", 0.0) / c
        out["ms_per_critic_step_cpu"] = 1000 * out.get("cpu_time", 0.0) / c
    return out


def time_to_threshold(series: dict[str, list], th: Threshold) -> Optional[dict[str, float]]:
    """The first logged point where the threshold is met: its step and training times."""
    for i, v in enumerate(series.get(th.key, [])):
        if th.met(v):
            return {a: series[a][i] for a in AXES if a in series}
    return None


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


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of one metric over seeds."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2],
            "n": len(v)}


def summarise(runs: list[dict[str, Any]], constraints: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for c in constraints:
        finals = [r["final"] for r in runs if r["constraint"] == c and r.get("ok")]
        keys = sorted({k for f in finals for k in f})
        out[c] = {k: spread([f[k] for f in finals if k in f and math.isfinite(f[k])])
                  for k in keys if any(k in f and math.isfinite(f[k]) for f in finals)}
    return out


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided paired permutation (sign-flip) test of a zero mean difference.

    With n pairs the smallest possible p is 2 / 2**n: 0.25 for 3 seeds, 0.0625 for 5."""
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = abs(sum(diffs))
    hits = sum(1 for signs in itertools.product((1, -1), repeat=n)
               if abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12)
    return hits / 2 ** n


def metric_direction(key: str) -> Optional[str]:
    return DIRECTION.get(key.split("/", 1)[-1]) if key.startswith(("eval/", "final/")) else None


def pairwise(runs: list[dict[str, Any]], baseline: str, other: str, key: str
             ) -> Optional[dict[str, Any]]:
    """``other`` vs ``baseline`` on ``key``, paired by seed: seeds better, p, a verdict."""
    better = metric_direction(key)
    if better is None:
        return None
    by = {(r["constraint"], r["seed"]): r["final"].get(key) for r in runs if r.get("ok")}
    seeds = sorted({s for (c, s) in by if c == other} & {s for (c, s) in by if c == baseline})
    pairs = [(by[(other, s)], by[(baseline, s)]) for s in seeds
             if by[(other, s)] is not None and by[(baseline, s)] is not None]
    if not pairs:
        return None
    sign = -1.0 if better == "lower" else 1.0  # positive diff = other is better
    diffs = [sign * (a - b) for a, b in pairs]
    wins = sum(d > 0 for d in diffs)
    n = len(diffs)
    p = sign_flip_p(diffs)
    min_p = 2 / 2 ** n
    if p <= 0.05:
        verdict = "better" if wins > n / 2 else "worse"
        sure = f"p = {p:.3g}"
    elif wins in (0, n) and any(diffs):
        verdict = ("better" if wins == n else "worse") + " on every seed"
        sure = (f"p = {p:.3g}; {n} seeds cannot reach p < 0.05 (smallest possible p "
                f"{min_p:.3g}): suggestive only")
    else:
        verdict = "no clear difference"
        sure = f"p = {p:.3g}"
    return {"key": key, "baseline": baseline, "other": other, "n": n, "wins": wins,
            "p": p, "min_p": min_p, "verdict": verdict, "sure": sure,
            "median_diff": statistics.median([a - b for a, b in pairs])}


# ----------------------------------------------------------------------------- writing

def fmt(v: Optional[float]) -> str:
    """The one number format of the report (tests compare against it)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e6 else f"{v:.3e}"


def report_metrics(summary: dict[str, dict]) -> list[str]:
    """Metric keys for the main table: final evaluation (else last scheduled eval), the
    critic's W estimate, in a stable order."""
    keys = sorted({k for s in summary.values() for k in s})
    finals = [k for k in keys if k.startswith("final/") and not _hidden(k)]
    evals = [k for k in keys if k.startswith("eval/") and not _hidden(k)]
    main = finals or evals
    return main + [k for k in ("w_estimate",) if k in keys]


def _hidden(key: str) -> bool:
    base = key.split("/", 1)[1]
    return base.endswith("_ref") or base in ("n", "real_n", "ref_n", "modes_total", "kid_std",
                                             "kid_std_ref", "w1_baseline", "classifier_acc")


def cell(s: Optional[dict[str, float]]) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def render_report(results: dict[str, Any], plots: dict[str, Any]) -> str:
    """report.md: what was run, the table of medians, costs, thresholds, verdicts, plots."""
    cons, summ, runs = results["constraints"], results["summary"], results["runs"]
    base = results["baseline"]
    budget = ", ".join(f"{k}={v}" for k, v in results["budget"].items() if v is not None)
    loads = [r["load_before"][0] for r in runs if r.get("load_before")] + \
        [r["load_after"][0] for r in runs if r.get("load_after")]
    m = results["machine"]
    n_seeds = len(results["seeds"])
    lines = [
        "# Equal-budget comparison", "",
        f"- config: `{results['config']}`; overrides: "
        + (" ".join(f"`{s}`" for s in results["sets"]) or "none"),
        f"- constraints: {', '.join(cons)} (baseline: **{base}**); seeds: "
        f"{', '.join(map(str, results['seeds']))}",
        f"- budget per run: {budget}; threads per run: {results['threads']}; "
        f"{_at_a_time(results)}, order interleaved across seeds",
        f"- machine: {m['cpu_count']} CPUs ({m['usable_cpus']} usable); 1-min load average "
        + (f"{min(loads):.2f}–{max(loads):.2f} over the runs" if loads else "not measured"),
        f"- finished runs: {sum(r.get('ok', False) for r in runs)} of {len(runs)}",
    ]
    failed = [r for r in runs if not r.get("ok")]
    for r in failed:
        lines.append(f"  - **{r['name']} failed** (exit {r.get('rc')}): {r.get('error', '')}")
    lines += ["", "Cells: median over seeds [min–max]. `final/...`: the final generator "
              "evaluated after training (same latents and sample count for every run); "
              "`eval/...`: the trainer's last scheduled evaluation.", ""]
    metrics = report_metrics(summ)
    lines += _table(["constraint", "n"] + metrics,
                    [[c, str(max((s["n"] for s in summ[c].values()), default=0))]
                     + [cell(summ[c].get(k)) for k in metrics] for c in cons])
    lines += ["", "## Cost", ""]
    lines += _table(["constraint", "generator steps", "critic steps", "wall s", "CPU s",
                     "ms / critic step (wall)", "ms / critic step (CPU)"],
                    [[c] + [cell(summ[c].get(k)) for k in COST_KEYS] for c in cons])
    if results["thresholds"]:
        lines += ["", "## Time to threshold", "",
                  "First logged point where the threshold holds; median over the seeds that "
                  "reached it.", ""]
        rows = []
        for t in results["thresholds"]:
            for c in cons:
                hits = [r["thresholds"].get(t) for r in runs
                        if r["constraint"] == c and r.get("ok")]
                reached = [h for h in hits if h]
                row = [t, c, f"{len(reached)}/{len(hits)}"]
                for a in ("generator_step", "wall_time", "cpu_time"):
                    vals = [h[a] for h in reached if h.get(a) is not None]
                    row.append(fmt(statistics.median(vals)) if vals else "-")
                rows.append(row)
        lines += _table(["threshold", "constraint", "reached", "generator step", "wall s",
                         "CPU s"], rows)
    lines += ["", f"## Verdicts (each vs {base}, paired by seed)", ""]
    if n_seeds < 5:
        lines += [f"With {n_seeds} seed(s) a paired sign-flip test cannot give p < 0.05 "
                  f"(its smallest possible p is {2 / 2 ** n_seeds:.3g}): every verdict below "
                  "is at best suggestive. Use ≥ 5 seeds (≥ 6 for p < 0.05 two-sided with one "
                  "seed against) before believing a difference.", ""]
    rows = []
    for k in metrics:
        for c in cons[1:]:
            pw = pairwise(runs, base, c, k)
            if pw:
                rows.append([k, f"{c} vs {base}", f"{pw['wins']}/{pw['n']}",
                             fmt(pw["median_diff"]), pw["verdict"], pw["sure"]])
    if rows:
        lines += _table(["metric", "pair", "seeds better", "median diff", "verdict",
                         "how sure"], rows)
    else:
        lines.append("No metric with a known better direction was measured (no eval keys).")
    if plots.get("metrics"):
        lines += ["", "## Plots", ""]
        for key, path in plots["metrics"].items():
            lines.append(f"![{key}]({path})")
    if plots.get("samples"):
        lines += ["", "## Samples at matched training time", "",
                  plots.get("samples_note", ""), "", f"![samples]({plots['samples']})"]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def write_outputs(plan: Plan, results: dict[str, Any]) -> None:
    from .compare_plots import plot_metrics, plot_samples
    plots = {"metrics": plot_metrics(results, plan.out)}
    plots.update(plot_samples(results, plan.out))
    results["plots"] = plots
    _write_json(plan.out / "results.json", results)
    (plan.out / "report.md").write_text(render_report(results, plots), encoding="utf-8")


def report_only(out: Path) -> dict[str, Any]:
    """Re-render report.md and the plots from an existing results.json."""
    path = out / "results.json"
    if not path.is_file():
        raise CompareError(f"no results.json in {out}")
    results = json.loads(path.read_text())
    from .compare_plots import plot_metrics, plot_samples
    plots = {"metrics": plot_metrics(results, out)}
    plots.update(plot_samples(results, out))
    results["plots"] = plots
    _write_json(path, results)
    (out / "report.md").write_text(render_report(results, plots), encoding="utf-8")
    return results


def _at_a_time(results: dict[str, Any]) -> str:
    jobs = results.get("jobs", 1)  # older results.json: one at a time
    where = " (submitit jobs)" if results.get("launcher") == "submitit" else ""
    return "runs one at a time" if jobs == 1 else f"runs up to {jobs} at a time{where}"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _final_eval_main(argv: list[str]) -> None:
    """The final-evaluation subprocess: one JSON line {run_dir: metrics or {"error": ...}}."""
    if len(argv) < 3 or argv[0] != "final-eval":
        sys.exit("usage: python -m wganlab.report.compare final-eval N_SAMPLES RUN_DIR...")
    out = {}
    for d in argv[2:]:
        try:
            out[d] = _final_eval_here(Path(d), int(argv[1]))
        except Exception as e:  # one broken run must not hide the others' results
            out[d] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    _final_eval_main(sys.argv[1:])
