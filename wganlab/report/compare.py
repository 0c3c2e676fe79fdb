"""Equal-budget comparisons of constraints: run every (constraint, seed) pair, then summarise.

Runs start in an order that interleaves constraints across seeds so that slow drift of a shared
machine favours no constraint, each a separate ``wganlab train`` subprocess, ``--jobs`` at a
time. Outputs in ``--out``: ``runs/<constraint>-s<seed>/`` (ordinary run directories),
``logs/``, ``results.json`` (everything measured), ``report.md`` (medians, spreads, verdicts)
and plots.

This module gathers the public names of the pieces, one concept each:

- :mod:`.compare_plan`: the :class:`Plan`, :class:`Threshold`, checks, run order and names;
- :mod:`.compare_run`: launching and resuming runs, run state, the final evaluation;
- :mod:`.compare_stats`: series, final values, spreads, paired sign-flip verdicts;
- :mod:`.compare_report`: report.md; :mod:`.compare_plots`: its figures;
- :mod:`.keys`: what the metric keys mean (direction, bookkeeping).
"""
from __future__ import annotations

import sys

from ..errors import CompareError, inside, unsafe_name
from .compare_plan import Plan, Threshold, default_jobs, run_name, run_order, validate
from .compare_report import cell, fmt, render_report, report_metrics
from .compare_run import _has_checkpoint  # noqa: F401  (the tests probe it)
from .compare_run import (collect, execute, final_eval_main, final_evals,
                          machine_info, make_launcher, prepare_run, report_only, run_complete,
                          run_info, write_outputs)
from .compare_stats import (columns, final_values, pairwise, sign_flip_p, spread, summarise,
                            time_to_threshold)
from .keys import AXES, COST_KEYS, DIRECTION, EXTRA_SERIES, metric_direction

__all__ = ["CompareError", "inside", "unsafe_name", "Plan", "Threshold", "default_jobs",
           "run_name", "run_order", "validate", "cell", "fmt", "render_report",
           "report_metrics", "collect", "execute", "final_eval_main",
           "final_evals", "machine_info", "make_launcher", "prepare_run", "report_only",
           "run_complete", "run_info", "write_outputs", "columns", "final_values", "pairwise",
           "sign_flip_p", "spread", "summarise", "time_to_threshold", "AXES", "COST_KEYS",
           "DIRECTION", "EXTRA_SERIES", "metric_direction"]

if __name__ == "__main__":  # the final evaluation's former entry point
    final_eval_main(sys.argv[1:])
