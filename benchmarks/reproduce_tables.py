"""Condensed tables and commit-sized figures for docs/reproduction.md from the comparisons that
benchmarks/reproduce.sh wrote (their results.json), so the document's numbers are generated,
never typed.

    python benchmarks/reproduce_tables.py [runs/reproduction] > /tmp/tables.md
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from wganlab.report.compare import cell, pairwise

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"

#: block -> (metrics for its table, the metric that gets a verdict column)
BLOCKS = {
    "toy-8gaussians": (["final/w1", "final/modes_hit", "final/high_quality"], "final/w1"),
    "toy-25gaussians": (["final/w1", "final/modes_hit", "final/high_quality"], "final/w1"),
    "mlp": (["final/fd", "final/kid", "final/coverage", "final/recall", "w_estimate"],
            "final/fd"),
    "mlp-state": (["final/fd", "final/kid", "final/coverage", "w_estimate"], "final/fd"),
    "dcgan": (["final/fd", "final/kid", "final/coverage", "w_estimate"], "final/fd"),
}
COST = [("generator_step", "G-steps"), ("ms_per_critic_step_cpu", "CPU ms / critic step")]


def table(res: dict, metrics: list[str], verdict_key: str) -> str:
    cons, summ, base = res["constraints"], res["summary"], res["baseline"]
    head = ["constraint", "runs"] + metrics + [c[1] for c in COST] + [f"{verdict_key} vs {base}"]
    rows = []
    for c in cons:
        n = sum(r.get("ok", False) for r in res["runs"] if r["constraint"] == c)
        pw = pairwise(res["runs"], base, c, verdict_key) if c != base else None
        v = f"better on {pw['wins']}/{pw['n']} seeds, p = {pw['p']:.2g}" if pw else "(baseline)"
        rows.append([c, str(n)] + [cell(summ[c].get(k)) for k in metrics]
                    + [cell(summ[c].get(k)) for k, _ in COST] + [v])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(root: Path) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    total_cpu = total_wall = 0.0
    n_runs = 0
    for block, (metrics, key) in BLOCKS.items():
        path = root / block / "results.json"
        if not path.is_file():
            print(f"## {block}: no results.json\n")
            continue
        res = json.loads(path.read_text())
        ok = [r for r in res["runs"] if r.get("ok")]
        # mlp-state reuses two runs of mlp: count compute once
        fresh = [r for r in ok if not (block == "mlp-state" and r.get("note") == "found finished")]
        cpu = sum(r["final"].get("cpu_time", 0.0) for r in fresh)
        wall = sum(r.get("duration_s") or 0.0 for r in fresh)
        total_cpu, total_wall, n_runs = total_cpu + cpu, total_wall + wall, n_runs + len(fresh)
        budget = ", ".join(f"{k}={v}" for k, v in res["budget"].items() if v is not None)
        loads = [r["load_before"][0] for r in ok if r.get("load_before")]
        print(f"## {block}\n\nbudget per run: {budget}; {len(ok)} of {len(res['runs'])} runs "
              f"finished; seeds {res['seeds']}; training CPU {cpu / 60:.1f} min, subprocess wall "
              f"{wall / 60:.1f} min; 1-min load before runs "
              + (f"{min(loads):.1f}–{max(loads):.1f}" if loads else "-") + "\n")
        print(table(res, metrics, key) + "\n")
        for name in ("plots/samples.png", "plots/eval_w1.png", "plots/eval_fd.png",
                     "plots/w_estimate.png"):
            src = root / block / name
            if src.is_file():
                dst = DOCS_IMG / f"{block}-{Path(name).name}"
                shutil.copyfile(src, dst)
                print(f"figure: docs/img/{dst.name} ({dst.stat().st_size // 1024} KiB)")
        print()
    print(f"total: {n_runs} runs, training CPU {total_cpu / 60:.1f} min (single thread, "
          f"evaluation excluded), subprocess wall {total_wall / 60:.1f} min")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduction"))
