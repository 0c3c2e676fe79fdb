"""report.md of a comparison: what was run, the table of medians, costs, time to thresholds,
paired verdicts and the plots, rendered from results.json's content (no files read)."""
from __future__ import annotations

import math
import statistics
from typing import Any, Optional

from .compare_stats import pairwise
from .keys import COST_KEYS, EXTRA_SERIES, hidden


def fmt(v: Optional[float]) -> str:
    """The one number format of the report (tests compare against it)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e6 else f"{v:.3e}"


def cell(s: Optional[dict[str, float]]) -> str:
    """A table cell of one spread: median [min–max] (the median alone for one seed)."""
    if not s:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def report_metrics(summary: dict[str, dict]) -> list[str]:
    """Metric keys for the main table: final evaluation (else last scheduled eval), the
    critic's W estimate, in a stable order."""
    keys = sorted({k for s in summary.values() for k in s})
    finals = [k for k in keys if k.startswith("final/") and not hidden(k)]
    evals = [k for k in keys if k.startswith("eval/") and not hidden(k)]
    main = finals or evals
    return main + [k for k in EXTRA_SERIES if k in keys]


def render_report(results: dict[str, Any], plots: dict[str, Any]) -> str:
    """report.md: what was run, the table of medians, costs, thresholds, verdicts, plots."""
    cons, summ, runs = results["constraints"], results["summary"], results["runs"]
    base = results["baseline"]
    metrics = report_metrics(summ)
    lines = _header(results)
    lines += _table(["constraint", "n"] + metrics,
                    [[c, str(max((s["n"] for s in summ[c].values()), default=0))]
                     + [cell(summ[c].get(k)) for k in metrics] for c in cons])
    lines += ["", "## Cost", ""]
    lines += _table(["constraint", "generator steps", "critic steps", "wall s", "CPU s",
                     "ms / critic step (wall)", "ms / critic step (CPU)"],
                    [[c] + [cell(summ[c].get(k)) for k in COST_KEYS] for c in cons])
    if results["thresholds"]:
        lines += _thresholds(results)
    lines += _verdicts(results, metrics)
    if plots.get("metrics"):
        lines += ["", "## Plots", ""]
        for key, path in plots["metrics"].items():
            lines.append(f"![{key}]({path})")
    if plots.get("samples"):
        lines += ["", "## Samples at matched training time", "",
                  plots.get("samples_note", ""), "", f"![samples]({plots['samples']})"]
    return "\n".join(lines) + "\n"


def _header(results: dict[str, Any]) -> list[str]:
    """What was run, on what machine, and which runs failed."""
    cons, runs = results["constraints"], results["runs"]
    budget = ", ".join(f"{k}={v}" for k, v in results["budget"].items() if v is not None)
    loads = [r["load_before"][0] for r in runs if r.get("load_before")] + \
        [r["load_after"][0] for r in runs if r.get("load_after")]
    m = results["machine"]
    lines = [
        "# Equal-budget comparison", "",
        f"- config: `{results['config']}`; overrides: "
        + (" ".join(f"`{s}`" for s in results["sets"]) or "none"),
        f"- constraints: {', '.join(cons)} (baseline: **{results['baseline']}**); seeds: "
        f"{', '.join(map(str, results['seeds']))}",
        f"- budget per run: {budget}; threads per run: {results['threads']}; "
        f"{_at_a_time(results)}, order interleaved across seeds",
        f"- machine: {m['cpu_count']} CPUs ({m['usable_cpus']} usable); 1-min load average "
        + (f"{min(loads):.2f}–{max(loads):.2f} over the runs" if loads else "not measured"),
        f"- finished runs: {sum(r.get('ok', False) for r in runs)} of {len(runs)}",
    ]
    for r in runs:
        if not r.get("ok"):
            lines.append(f"  - **{r['name']} failed** (exit {r.get('rc')}): {r.get('error', '')}")
    return lines + ["", "Cells: median over seeds [min–max]. `final/...`: the final generator "
                    "evaluated after training (same latents and sample count for every run); "
                    "`eval/...`: the trainer's last scheduled evaluation.", ""]


def _thresholds(results: dict[str, Any]) -> list[str]:
    """Per threshold and constraint: seeds that reached it, median step and times to it."""
    lines = ["", "## Time to threshold", "",
             "First logged point where the threshold holds; median over the seeds that "
             "reached it.", ""]
    rows = []
    for t in results["thresholds"]:
        for c in results["constraints"]:
            hits = [r["thresholds"].get(t) for r in results["runs"]
                    if r["constraint"] == c and r.get("ok")]
            reached = [h for h in hits if h]
            row = [t, c, f"{len(reached)}/{len(hits)}"]
            for a in ("generator_step", "wall_time", "cpu_time"):
                vals = [h[a] for h in reached if h.get(a) is not None]
                row.append(fmt(statistics.median(vals)) if vals else "-")
            rows.append(row)
    return lines + _table(["threshold", "constraint", "reached", "generator step", "wall s",
                           "CPU s"], rows)


def _verdicts(results: dict[str, Any], metrics: list[str]) -> list[str]:
    """Each constraint against the baseline on every metric with a known better direction."""
    cons, runs, base = results["constraints"], results["runs"], results["baseline"]
    n_seeds = len(results["seeds"])
    lines = ["", f"## Verdicts (each vs {base}, paired by seed)", ""]
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
    if not rows:
        return lines + ["No metric with a known better direction was measured (no eval keys)."]
    return lines + _table(["metric", "pair", "seeds better", "median diff", "verdict",
                           "how sure"], rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _at_a_time(results: dict[str, Any]) -> str:
    jobs = results.get("jobs", 1)  # older results.json: one at a time
    where = " (submitit jobs)" if results.get("launcher") == "submitit" else ""
    return "runs one at a time" if jobs == 1 else f"runs up to {jobs} at a time{where}"
