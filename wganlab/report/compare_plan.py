"""What a comparison runs: the :class:`Plan` (one config, named constraints, seeds, one budget
for all), its thresholds, its checks before any run starts, and the order and names of its runs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import load_config
from ..errors import CompareError, ConfigError, unsafe_name
from ..train.threads import usable_cpus


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


def default_jobs(plan: Plan) -> int:
    """Runs at a time: one per GPU on CUDA, else the usable cores divided by the threads of
    a run (at least one); on submitit, every run at once (the scheduler queues them)."""
    if plan.launcher == "submitit":
        return len(plan.constraints) * len(plan.seeds)
    if plan.gpus:
        return len(plan.gpus)
    return max(1, usable_cpus() // max(1, plan.threads))


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
