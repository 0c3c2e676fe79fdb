"""How many intra-op threads a run uses (``train.threads``), chosen so that it never thrashes.

PyTorch's default, one thread per core, assumes the machine is otherwise idle. When another
process keeps a core busy, a run's threads wait for each other at every operation and the run
becomes several times slower than on one thread (benchmarks/results/threads.json). ``auto`` takes
only the cores idle when the run starts, and one thread for the toy models, whose operations
are too small to split; the measured table is in README ("Threads").
"""
from __future__ import annotations

import os
import time
from typing import Optional, Union

#: models whose operations are too small to gain from a second thread
SMALL_MODELS = ("toy",)


def resolve_threads(setting: Union[int, str], model_name: str) -> Optional[int]:
    """The thread count for ``train.threads``: a positive number as given, 0 for PyTorch's
    default (None), ``auto`` for :func:`auto_threads`, unless ``OMP_NUM_THREADS`` is set
    (a scheduler's or the user's choice, which auto respects)."""
    if setting == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        return int(env) if env.isdigit() and int(env) > 0 else auto_threads(model_name)
    return int(setting) or None


def auto_threads(model_name: str) -> int:
    """One thread for small models; else the cores idle now (at least one)."""
    if model_name in SMALL_MODELS:
        return 1
    return max(1, min(usable_cpus(), idle_cores()))


def idle_cores(seconds: float = 0.2) -> int:
    """Cores left idle by every other process over ``seconds`` (/proc/stat; 1 elsewhere).
    A core counts when at least 80 % of it is idle."""
    try:
        a = _cpu_times()
        time.sleep(seconds)
        b = _cpu_times()
    except (OSError, ValueError):
        return 1
    total = sum(b) - sum(a)
    if total <= 0:
        return 1
    idle = (b[3] + b[4] - a[3] - a[4]) / total * (os.cpu_count() or 1)  # idle + iowait
    return int(idle + 0.2)


def _cpu_times() -> list[int]:
    with open("/proc/stat", encoding="ascii") as f:
        return [int(v) for v in f.readline().split()[1:]]


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask; all cores elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
