"""Condensed tables and commit-sized figures for docs/reproduction.md from the comparisons that
benchmarks/reproduce.sh wrote (their results.json), so the document's numbers are generated,
never typed.

    python benchmarks/reproduce_tables.py [runs/reproduction] > /tmp/tables.md
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from wganlab.report.compare import cell, fmt, pairwise

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"

#: block -> (metrics for its table, the metric that gets a verdict column)
BLOCKS = {
    "toy-8gaussians": (["final/w1", "final/modes_hit", "final/high_quality"], "final/w1"),
    "toy-25gaussians": (["final/w1", "final/modes_hit", "final/high_quality"], "final/w1"),
    "toy-8gaussians-long": (["final/w1", "final/modes_hit", "final/high_quality", "w_estimate"],
                            "final/w1"),
    "mlp": (["final/fd", "final/kid", "final/coverage", "final/recall", "w_estimate"],
            "final/fd"),
    "mlp-state": (["final/fd", "final/kid", "final/coverage", "w_estimate"], "final/fd"),
    "dcgan": (["final/fd", "final/kid", "final/coverage", "w_estimate"], "final/fd"),
    "mlp-long": (["final/fd", "final/kid", "final/coverage", "final/is", "w_estimate"],
                 "final/fd"),
    "mlp-long-extra": (["final/fd", "final/kid", "final/coverage", "final/is", "w_estimate"],
                       "final/fd"),
    "dcgan-long": (["final/fd", "final/kid", "final/coverage", "w_estimate"], "final/fd"),
}
#: the figures docs/reproduction.md shows, per block
FIGURES = {
    "toy-8gaussians": ("eval_w1.png",), "toy-25gaussians": ("eval_w1.png",),
    "toy-8gaussians-long": ("eval_w1.png", "samples.png"),
    "mlp": ("samples.png", "w_estimate.png"), "dcgan": ("samples.png",),
    "mlp-long": ("samples.png", "eval_fd.png"), "mlp-long-extra": ("samples.png", "eval_fd.png"),
    "dcgan-long": ("samples.png", "eval_fd.png"),
}
COST = [("generator_step", "G-steps"), ("ms_per_critic_step_cpu", "CPU ms / critic step")]


def shrink(src: Path, dst: Path, max_side: int = 1100) -> None:
    """A commit-sized copy: at most ``max_side`` pixels a side, a 64-colour palette."""
    from PIL import Image
    img = Image.open(src).convert("RGB")
    img.thumbnail((max_side, max_side))
    img.quantize(colors=64).save(dst, optimize=True)


def critic_scale(runs: list[dict]) -> float:
    """The critic's |W estimate| over its last 10 logs (median), median over seeds: how strong
    a signal the generator gets (one batch's final estimate is too noisy)."""
    per_run = []
    for r in runs:
        w = [abs(v) for v in r["series"].get("w_estimate", []) if v is not None][-10:]
        if w:
            per_run.append(statistics.median(w))
    return statistics.median(per_run) if per_run else float("nan")


def table(res: dict, metrics: list[str], verdict_key: str) -> str:
    cons, summ, base = res["constraints"], res["summary"], res["baseline"]
    metrics = [m for m in metrics if m != "w_estimate"]
    head = (["constraint", "runs"] + metrics + ["critic \\|W\\| (last 10 logs)"]
            + [c[1] for c in COST] + [f"{verdict_key} vs {base}"])
    rows = []
    for c in cons:
        ok = [r for r in res["runs"] if r["constraint"] == c and r.get("ok")]
        pw = pairwise(res["runs"], base, c, verdict_key) if c != base else None
        v = f"better on {pw['wins']}/{pw['n']} seeds, p = {pw['p']:.2g}" if pw else "(baseline)"
        rows.append([c, str(len(ok))] + [cell(summ[c].get(k)) for k in metrics]
                    + [fmt(critic_scale(ok))]
                    + [cell(summ[c].get(k)) for k, _ in COST] + [v])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fd_scale(mnist_dir: str = "../shared/data/mnist") -> str:
    """FD of uniform noise and of blank images, to read the MNIST FDs against."""
    import torch

    from wganlab.config import load_config
    from wganlab.metrics.suite import evaluate
    cfg = load_config("mnist_mlp", ["data.name=mnist", f"data.dir={mnist_dir}"])
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(2000, 1, 32, 32, generator=g) * 2 - 1
    black = torch.full((2000, 1, 32, 32), -1.0)
    fd = [evaluate(x, cfg.data, 2000, seed=0)["eval/fd"] for x in (noise, black)]
    return f"FD scale: uniform noise {fd[0]:.0f}, all-black images {fd[1]:.0f}"


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
        # mlp-state and mlp-long-extra reuse runs of other blocks: count compute once
        fresh = [r for r in ok if not (block in ("mlp-state", "mlp-long-extra")
                                       and r.get("note") == "found finished")]
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
        for name in FIGURES.get(block, ()):
            src = root / block / "plots" / name
            if src.is_file():
                dst = DOCS_IMG / f"{block}-{Path(name).name}"
                shrink(src, dst)
                print(f"figure: docs/img/{dst.name} ({dst.stat().st_size // 1024} KiB)")
        print()
    print(fd_scale())
    print(f"total: {n_runs} runs, training CPU {total_cpu / 60:.1f} min (single thread, "
          f"evaluation excluded), subprocess wall {total_wall / 60:.1f} min")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduction"))
