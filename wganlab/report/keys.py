"""What the keys of a metrics record mean to a report: axes, costs, which way a metric is
better, and which keys are bookkeeping (sizes, spreads, references) rather than results.

Shared by the comparison (tables, verdicts, plots) and ``wganlab plot``."""
from __future__ import annotations

from typing import Optional

from ..metrics import meta

#: metric (without "eval/"/"final/") -> which way is better; others get no verdict
DIRECTION = {k: m.better for k, m in meta.METRICS.items() if m.better}
#: keys of a metrics record that are x axes, not metrics
AXES = ("generator_step", "critic_step", "wall_time", "cpu_time")
#: series plotted besides the eval/ ones
EXTRA_SERIES = ("w_estimate",)
#: final values that describe cost, reported beside the metrics
COST_KEYS = ("generator_step", "critic_step", "wall_time", "cpu_time",
             "ms_per_critic_step_wall", "ms_per_critic_step_cpu")
#: evaluation keys (without "eval/"/"final/") that size or qualify a metric: never shown alone
BOOKKEEPING = meta.BOOKKEEPING | {"kid_std_ref", "w1_baseline", "classifier_acc"}


def metric_direction(key: str) -> Optional[str]:
    """"lower" or "higher" for an evaluation key whose better direction is known, else None."""
    return meta.direction(key) if key.startswith(meta.PREFIXES) else None


def hidden(key: str) -> bool:
    """Whether ``key`` is a real-data reference (``..._ref``) or an evaluation's bookkeeping,
    left out of tables and curves."""
    return key.endswith("_ref") or (key.startswith(("eval/", "final/"))
                                    and key.split("/", 1)[1] in BOOKKEEPING)
