"""The tables of docs/reproduction.md §6 (the controlled study) from the blocks' results.json.

    python benchmarks/study_tables.py [--root benchmarks/results/study] [--boot 10000]
    python benchmarks/study_tables.py --claims   # the same statistics for §2b, §4, §4b
    python benchmarks/study_tables.py --best-control   # the replications' control arm

Reads every ``<root>/main/**/results.json`` (the main block's seed groups: clip, bounded,
rebalanced, the retuning grid's choice shown as ``clip-retuned``, balance, gp) and every
``<root>/tune-*/results.json`` (the retuning grid). Prints Markdown: the grid, per-arm medians,
and for each contrast of the protocol the per-seed differences, their median with a bootstrap
95 % CI, the exact paired sign-flip p (Holm-adjusted within the attribution family) and the
verdict; an exploratory per-step and cost table. Then the replications (``<root>/fashion``,
``<root>/digits``, each with its ``-control`` block) and the ``max_drift`` sensitivity
(``<root>/sensitivity``; its 0.1 arm and clip are the main block's runs on the same seeds),
and the Table II DCGAN's budget search (``<root>/dcgan-budget-clip-s0``) and block
(``<root>/dcgan-block``), where they exist.
A block still running can be summarised first with ``wganlab compare ... --report-only`` (its
finished runs only).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional

import numpy as np
from fd_reached import fd_reached

from wganlab.report.compare import sign_flip_p

PRIMARY = ("invclip-exact-bounded", "clip")
#: the attribution family (Holm): bounded against each control
FAMILY = [("invclip-exact-bounded", "clip-rebalanced"), ("invclip-exact-bounded", "clip-retuned"),
          ("invclip-exact-bounded", "invclip-balance")]
OTHERS = [("clip-rebalanced", "clip"), ("clip-retuned", "clip"), ("invclip-balance", "clip"),
          ("gp", "clip"), ("gp", "invclip-exact-bounded")]
#: the controls of the main block; the replications use the one with the lowest median final FD
CONTROLS = ["clip-rebalanced", "clip-retuned", "invclip-balance"]
#: generator steps at which the exploratory per-step contrast reads the scheduled eval FD
MATCHED_STEPS = (1000, 2000)
ENDPOINTS = [("final/fd", "FD"), ("final/kid", "KID"), ("final/coverage", "classes"),
             ("ttt/eval/fd < 500", "CPU-s to FD<500")]


def load_block(path: Path, rename: Optional[dict[str, str]] = None,
               steps: tuple[int, ...] = MATCHED_STEPS) -> dict[tuple[str, int], dict]:
    """{(arm, seed): {endpoint: value}} of a block's finished, evaluated runs; the scheduled eval
    FD at the generator ``steps`` as ``eval/fd@G<step>``."""
    res = json.loads((path / "results.json").read_text())
    out = {}
    for r in res["runs"]:
        fin = r.get("final") or {}
        if not r.get("ok") or "final/fd" not in fin:
            continue
        arm = (rename or {}).get(r["constraint"], r["constraint"])
        vals = {k: fin.get(k) for k, _ in ENDPOINTS if k.startswith("final/")}
        if vals.get("final/coverage") is not None:
            vals["final/coverage"] *= 10
        hit = (r.get("thresholds") or {}).get("eval/fd < 500")
        vals["ttt/eval/fd < 500"] = hit["cpu_time"] if hit else None
        vals["generator_steps"] = fin.get("generator_step")
        vals["ms_per_critic_step_cpu"] = fin.get("ms_per_critic_step_cpu")
        series = r.get("series") or {}
        for g, fd in zip(series.get("generator_step") or [], series.get("eval/fd") or []):
            if g is not None and fd is not None and int(g) in steps:
                vals[f"eval/fd@G{int(g)}"] = fd
        out[(arm, int(r["seed"]))] = vals
    return out


def bootstrap_median_ci(diffs: list[float], n_boot: int, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % CI of the median difference (resampling seeds with replacement)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(diffs, dtype=float)
    meds = np.median(rng.choice(x, size=(n_boot, len(x)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adj, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = running
    return adj


def contrast(data, arm: str, ref: str, key: str, n_boot: int) -> Optional[dict]:
    """arm − ref on ``key``, paired by seed (seeds where both have a value)."""
    seeds = sorted(s for (a, s) in data if a == arm and (ref, s) in data
                   and data[(arm, s)].get(key) is not None
                   and data[(ref, s)].get(key) is not None)
    if not seeds:
        return None
    diffs = [data[(arm, s)][key] - data[(ref, s)][key] for s in seeds]
    lo, hi = bootstrap_median_ci(diffs, n_boot)
    lower_better = key != "final/coverage"
    wins = sum((d < 0) if lower_better else (d > 0) for d in diffs)
    return {"arm": arm, "ref": ref, "key": key, "n": len(seeds), "seeds": seeds,
            "diffs": diffs, "median": statistics.median(diffs), "ci": (lo, hi),
            "p": sign_flip_p(diffs), "wins": wins, "lower_better": lower_better}


def verdict(c: dict, p: float) -> str:
    if p >= 0.05:
        return "no difference shown"
    mean = sum(c["diffs"]) / len(c["diffs"])
    better = (mean < 0) if c["lower_better"] else (mean > 0)
    return "better" if better else "worse"


def fmt(v: Optional[float], nd: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{nd}f}" if abs(v) >= 10 or nd else f"{v:.2f}"


def arm_table(data) -> list[str]:
    arms = list(dict.fromkeys(a for a, _ in data))
    lines = ["| arm | seeds | " + " | ".join(n for _, n in ENDPOINTS) + " | FD < 500 reached |",
             "|---|---|" + "---|" * (len(ENDPOINTS) + 1)]
    for arm in arms:
        rows = [v for (a, _), v in sorted(data.items()) if a == arm]
        cells = []
        for key, _ in ENDPOINTS:
            vals = [r[key] for r in rows if r.get(key) is not None]
            cells.append(f"{fmt(statistics.median(vals))} [{fmt(min(vals))}–{fmt(max(vals))}]"
                         if vals else "–")
        hit = sum(r.get("ttt/eval/fd < 500") is not None for r in rows)
        lines.append(f"| {arm} | {len(rows)} | " + " | ".join(cells) + f" | {hit}/{len(rows)} |")
    return lines


def contrast_rows(cs: list[dict], ps: list[float], what: str = "") -> list[str]:
    lines = []
    for c, p in zip(cs, ps):
        lo, hi = c["ci"]
        lines.append(f"| {c['arm']} − {c['ref']}{what} | {c['n']} | {c['wins']}/{c['n']} | "
                     f"{fmt(c['median'])} [{fmt(lo)}, {fmt(hi)}] | {c['p']:.3g} | {p:.3g} | "
                     f"{verdict(c, p)} |")
    return lines


#: the earlier blocks' contrasts behind the claims table: (block, arm, reference)
EARLIER = [("mlp-long", "invclip-paper", "clip"), ("mlp-long", "invclip-exact", "clip"),
           ("mlp-long", "invclip-exact-state", "clip"), ("mlp-long", "gp", "clip"),
           ("mlp-long-extra", "invclip-exact-bounded", "clip"),
           ("mlp-long-extra", "invclip-output-bounded", "clip"),
           ("mlp5k-150s", "invclip-exact-bounded", "clip"), ("mlp5k-150s", "invclip-exact", "clip")]


def claims(root: Path, n_boot: int) -> None:
    """FD contrasts of the earlier reproduction blocks, in the study's format."""
    print("| block | contrast | seeds | arm better on | median FD difference [95 % CI] | p | "
          "verdict |\n|---|---|---|---|---|---|---|")
    for block, arm, ref in EARLIER:
        data = load_block(root / block)
        for key, what in [("final/fd", "")] + [(f"eval/fd@G{g}", f", eval FD at G-step {g:,}")
                                               for g in MATCHED_STEPS]:
            c = contrast(data, arm, ref, key, n_boot)
            if c:
                lo, hi = c["ci"]
                print(f"| {block} | {arm} − {ref}{what} | {c['n']} | {c['wins']}/{c['n']} | "
                      f"{fmt(c['median'])} [{fmt(lo)}, {fmt(hi)}] | {c['p']:.3g} | "
                      f"{verdict(c, c['p'])} |")


def load_main(root: Path, retuned: str) -> dict:
    data = {}
    for res in sorted((root / "main").glob("**/results.json")):
        data.update(load_block(res.parent, {retuned: "clip-retuned"}))
    return data


def best_control(data) -> Optional[str]:
    """The control arm with the lowest median final FD (ties: the order of CONTROLS)."""
    meds = {}
    for arm in CONTROLS:
        fds = [v["final/fd"] for (a, _), v in data.items() if a == arm]
        if fds:
            meds[arm] = statistics.median(fds)
    return min(meds, key=lambda a: (meds[a], CONTROLS.index(a))) if meds else None


def evaluator_line(path: Path) -> str:
    """The evaluator's held-out accuracy and the real-vs-real FD floor of a block."""
    res = json.loads((path / "results.json").read_text())
    fins = [r.get("final") or {} for r in res["runs"] if r.get("ok")]
    acc = sorted({round(f["final/classifier_acc"], 4) for f in fins if "final/classifier_acc" in f})
    refs = [f["final/fd_ref"] for f in fins if "final/fd_ref" in f]
    return (f"evaluator held-out accuracy {', '.join(f'{a:.3f}' for a in acc) or '–'}; "
            f"real held-out FD {fmt(statistics.median(refs), 1) if refs else '–'}")


def replication(root: Path, block: str, control: Optional[str], n_boot: int,
                retuned: str) -> None:
    """Arms and contrasts of a replication block (clip, bounded, the control)."""
    data = {}
    for path in (root / block, root / f"{block}-control"):
        if (path / "results.json").is_file():
            data.update(load_block(path, {retuned: "clip-retuned"}))
    if not data:
        return
    print(f"### Replication: {block} ({evaluator_line(root / block)})\n")
    print("\n".join(arm_table(data)) + "\n")
    pairs = [PRIMARY] + ([(control, "clip"), ("invclip-exact-bounded", control)]
                         if control else [])
    cs = [c for c in (contrast(data, a, r, "final/fd", n_boot) for a, r in pairs) if c]
    print("\n".join(HEAD + contrast_rows(cs, [c["p"] for c in cs])) + "\n")


def sensitivity(root: Path, main_data: dict, n_boot: int) -> None:
    """max_drift 0.02 / 0.1 / 0.5 against clip, on the sensitivity block's seeds."""
    if not (root / "sensitivity" / "results.json").is_file():
        return
    data = load_block(root / "sensitivity")
    seeds = {s for _, s in data}
    data.update({k: v for k, v in main_data.items()
                 if k[1] in seeds and k[0] in ("clip", "invclip-exact-bounded")})
    print("### Sensitivity to max_drift (0.1 and clip: the main block's runs)\n")
    print("\n".join(arm_table(data)) + "\n")
    arms = ["invclip-exact-bounded-0.02", "invclip-exact-bounded", "invclip-exact-bounded-0.5"]
    cs = [c for c in (contrast(data, a, "clip", "final/fd", n_boot) for a in arms) if c]
    print("\n".join(HEAD + contrast_rows(cs, [c["p"] for c in cs])) + "\n")


def plot_main(data, path: Path) -> None:
    """Final FD of every run, one column per arm, each seed a line across the arms: the paired
    design at a glance (a line going down from clip to an arm is a seed where the arm wins)."""
    from wganlab.plotting import pyplot
    plt = pyplot()
    arms = ["clip", "invclip-exact-bounded", "clip-rebalanced", "clip-retuned",
            "invclip-balance", "gp"]
    arms = [a for a in arms if any(k[0] == a for k in data)]
    seeds = sorted({s for _, s in data})
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for s in seeds:
        ys = [data.get((a, s), {}).get("final/fd", float("nan")) for a in arms]
        ax.plot(range(len(arms)), ys, color="0.75", lw=0.8, zorder=1)
    for i, a in enumerate(arms):
        ys = [data[(a, s)]["final/fd"] for s in seeds if (a, s) in data]
        ax.scatter([i] * len(ys), ys, s=14, zorder=2)
        ax.hlines(statistics.median(ys), i - 0.25, i + 0.25, color="k", lw=2, zorder=3)
    ax.set_xticks(range(len(arms)), [a.replace("invclip-exact-", "") for a in arms])
    ax.set_yscale("log")
    ax.set_ylabel("final classifier-feature FD (log scale, lower is better)")
    ax.set_title(f"Table I MLP, full MNIST, 300 CPU-s per run, seeds {seeds[0]}–{seeds[-1]} "
                 "(bar: median)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exploratory(data, n_boot: int) -> None:
    """Not pre-registered: each arm against clip at matched generator steps (the scheduled eval
    FD), and what a critic step costs each arm relative to clip in the same seed."""
    print("\n### Exploratory (not pre-registered): per generator step and per CPU-second\n")
    print("Scheduled eval FD (1,000 samples) at matched generator steps; cost per critic step "
          "as a ratio to clip's in the same seed (`ms_per_critic_step_cpu`).\n")
    lines = HEAD[:]
    for arm in ("invclip-exact-bounded", "clip-rebalanced", "clip-retuned"):
        for g in MATCHED_STEPS:
            c = contrast(data, arm, "clip", f"eval/fd@G{g}", n_boot)
            if c:
                lines += contrast_rows([c], [c["p"]], f", eval FD at G-step {g:,}")
    print("\n".join(lines) + "\n")
    cost = "ms_per_critic_step_cpu"
    for arm in dict.fromkeys(a for a, _ in data):
        ratios = [data[(arm, s)][cost] / data[("clip", s)][cost] for (a, s) in data
                  if a == arm and data[(a, s)].get(cost) and data.get(("clip", s), {}).get(cost)]
        steps = [v["generator_steps"] for (a, _), v in data.items() if a == arm
                 and v.get("generator_steps") is not None]
        if ratios and steps:
            print(f"- {arm}: CPU per critic step ×{statistics.median(ratios):.2f} of clip's "
                  f"(median; {min(ratios):.2f}–{max(ratios):.2f}), generator steps in the budget "
                  f"{statistics.median(steps):,.0f} ({min(steps):,.0f}–{max(steps):,.0f})")


def dcgan(root: Path, n_boot: int) -> None:
    """Table II DCGAN on CPU: plain clipping's budget search (seed 0), then the 3 x 3 block at
    that budget, each arm against clip at the end and half-way (3 seeds: p is at least 0.25)."""
    budget = root / "dcgan-budget-clip-s0" / "metrics.jsonl"
    if budget.is_file():
        rows = [json.loads(x) for x in budget.read_text().splitlines() if x.strip()]
        done, hit = fd_reached(budget, 500)
        cpu = max((r["cpu_time"], r["generator_step"]) for r in rows if "cpu_time" in r)
        evals = ", ".join(f"{r['generator_step']:,}: {fmt(r['eval/fd'])}"
                          for r in rows if "eval/fd" in r)
        print("### Table II DCGAN: the budget search (plain clipping, seed 0)\n")
        print(f"Scheduled eval FD (1,000 samples) by generator step: {evals}. FD < 500 "
              + (f"first at step {hit:,}." if hit else "not reached.")
              + f" {done:,} generator steps, {cpu[0] / cpu[1]:.2f} CPU-s each.\n")
    block = root / "dcgan-block"
    if not (block / "results.json").is_file():
        return
    data = load_block(block, steps=(250,))
    print("### Table II DCGAN: the block at that budget\n")
    print("\n".join(arm_table(data)) + "\n")
    lines = HEAD[:]
    for arm in ("invclip-paper", "invclip-exact-bounded"):
        for key, what in (("final/fd", ""), ("eval/fd@G250", ", eval FD at G-step 250")):
            c = contrast(data, arm, "clip", key, n_boot)
            if c:
                lines += contrast_rows([c], [c["p"]], what)
    print("\n".join(lines) + "\n")
    runs = json.loads((block / "results.json").read_text())["runs"]
    for arm in ("invclip-paper", "invclip-exact-bounded"):
        fins = [r["final"] for r in runs if r["constraint"] == arm and r.get("ok")]
        layers = sorted({k for f in fins for k in f if k.startswith("invclip/drift_median_L")})
        drift = {k.rsplit("_", 1)[1]: statistics.median(f[k] for f in fins if k in f)
                 for k in layers}
        if drift:
            print(f"- {arm}: accumulated log d of the median unit at the end, per layer "
                  "(median over seeds): " + ", ".join(f"{k} {v:+.2f}" for k, v in drift.items()))


HEAD = ["| contrast | seeds | arm better on | median difference [95 % CI] | p | "
        "p (Holm) | verdict |", "|---|---|---|---|---|---|---|"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/study"))
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--retuned", default="clip-x0.8", help="the retuning grid's choice")
    ap.add_argument("--best-control", action="store_true",
                    help="print the replications' control arm (its config name) and stop")
    ap.add_argument("--plot", type=Path, help="write the main block's per-seed FD figure here")
    ap.add_argument("--claims", nargs="?", const=Path("benchmarks/results/reproduction"),
                    type=Path, help="the earlier blocks' contrasts (folder of the blocks)")
    args = ap.parse_args(argv)
    if args.claims:
        return claims(args.claims, args.boot)
    root = args.root

    data = load_main(root, args.retuned)
    control = best_control(data)
    if args.best_control:
        if control is None:
            raise SystemExit(f"no main-block results under {root / 'main'}")
        print(args.retuned if control == "clip-retuned" else control)
        return
    tune = {}
    for block in sorted(root.glob("tune-*")):
        if (block / "results.json").is_file():
            tune.update(load_block(block))
    if tune:
        print("### The retuning grid (tuning seeds)\n")
        print("| configuration | seeds | final FD per seed | mean FD |\n|---|---|---|---|")
        for arm in dict.fromkeys(a for a, _ in tune):
            fds = [(s, v["final/fd"]) for (a, s), v in sorted(tune.items()) if a == arm]
            print(f"| {arm} | {len(fds)} | " + ", ".join(f"{fmt(f)} (s{s})" for s, f in fds)
                  + f" | {fmt(sum(f for _, f in fds) / len(fds))} |")
        print()

    if args.plot and data:
        plot_main(data, args.plot)
    print("### Arms (test seeds): median [min–max]\n")
    print("\n".join(arm_table(data)) + "\n")

    primary = contrast(data, *PRIMARY, "final/fd", args.boot)
    fam = [c for c in (contrast(data, a, r, "final/fd", args.boot) for a, r in FAMILY) if c]
    others = [c for c in (contrast(data, a, r, "final/fd", args.boot) for a, r in OTHERS) if c]
    print("### Contrasts on the primary endpoint (final FD; negative = first arm better)\n")
    lines = HEAD[:]
    if primary:
        lines += contrast_rows([primary], [primary["p"]])
    lines += contrast_rows(fam, holm([c["p"] for c in fam]))
    lines += contrast_rows(others, [c["p"] for c in others])
    print("\n".join(lines) + "\n")
    print("### Secondary endpoints, bounded − clip\n")
    lines = HEAD[:]
    for key, name in ENDPOINTS[1:]:
        c = contrast(data, *PRIMARY, key, args.boot)
        if c:
            lines += contrast_rows([c], [c["p"]], f", {name}")
    print("\n".join(lines))
    exploratory(data, args.boot)
    if primary:
        print("\nPer-seed FD differences, bounded − clip: "
              + ", ".join(f"s{s} {d:+.0f}" for s, d in zip(primary["seeds"], primary["diffs"])))
    if control:
        print(f"\nBest control (lowest median final FD): {control}\n")
    for block in ("fashion", "digits"):
        replication(root, block, control, args.boot, args.retuned)
    sensitivity(root, data, args.boot)
    dcgan(root, args.boot)


if __name__ == "__main__":
    main()
