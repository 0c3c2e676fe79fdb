"""Plots of a comparison: metric bands per constraint, and samples at matched training time."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..plotting import pyplot
from .keys import EXTRA_SERIES, hidden

X_AXES = (("generator_step", "generator step"), ("wall_time", "training wall time (s)"),
          ("cpu_time", "training CPU time (s)"))


def series_keys(results: dict[str, Any]) -> list[str]:
    """Metrics worth a plot: every eval/ series (no references) and the W estimate."""
    keys: set[str] = set()
    for r in results["runs"]:
        keys |= {k for k in r.get("series", {}) if k.startswith("eval/")}
    return sorted(k for k in keys if not hidden(k)) + list(EXTRA_SERIES)


def band(runs: list[dict[str, Any]], x_key: str, y_key: str, points: int = 200
         ) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(x, median, min, max) over runs on a common grid; each run is interpolated inside its
    own range only, so a run that stopped early does not flatten the band."""
    curves = []
    for r in runs:
        s = r.get("series", {})
        xs, ys = s.get(x_key, []), s.get(y_key, [])
        pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None
               and math.isfinite(y)]
        if pts:
            curves.append(np.asarray(pts, dtype=float))
    if not curves:
        return None
    lo = min(c[0, 0] for c in curves)
    hi = max(c[-1, 0] for c in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    stack = np.full((len(curves), len(grid)), np.nan)
    for i, c in enumerate(curves):
        inside = (grid >= c[0, 0]) & (grid <= c[-1, 0])
        stack[i, inside] = np.interp(grid[inside], c[:, 0], c[:, 1])
    keep = ~np.all(np.isnan(stack), axis=0)
    stack, grid = stack[:, keep], grid[keep]
    with np.errstate(all="ignore"):
        return grid, np.nanmedian(stack, 0), np.nanmin(stack, 0), np.nanmax(stack, 0)


def plot_metrics(results: dict[str, Any], out: Path) -> dict[str, str]:
    """One PNG per metric: vs generator step, wall time and CPU time, a band per constraint."""
    plt = pyplot()
    (out / "plots").mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    ok = [r for r in results["runs"] if r.get("ok")]
    for key in series_keys(results):
        fig, axes = plt.subplots(1, len(X_AXES), figsize=(5 * len(X_AXES), 3.6), dpi=90)
        drawn = False
        for ax, (x_key, x_label) in zip(axes, X_AXES):
            for i, c in enumerate(results["constraints"]):
                b = band([r for r in ok if r["constraint"] == c], x_key, key)
                if b is None:
                    continue
                x, med, mn, mx = b
                color = f"C{i % 10}"
                ax.plot(x, med, color=color, lw=1.4, label=c)
                ax.fill_between(x, mn, mx, color=color, alpha=0.18, lw=0)
                drawn = True
            ax.set_xlabel(x_label)
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        if not drawn:
            plt.close(fig)
            continue
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{key}: median and min–max over seeds", fontsize=9)
        fig.tight_layout()
        name = "plots/" + key.replace("/", "_") + ".png"
        fig.savefig(out / name)
        plt.close(fig)
        paths[key] = name
    return paths


def sample_at_time(run: dict[str, Any], axis: str, target: float) -> Optional[tuple[str, float]]:
    """The run's sample PNG whose generator step maps (through the logged records) to the
    training time closest to ``target``: (file name, its time)."""
    s = run.get("series", {})
    steps = [g for g, t in zip(s.get("generator_step", []), s.get(axis, [])) if t is not None]
    times = [t for t in s.get(axis, []) if t is not None]
    if not steps or not run.get("samples"):
        return None
    best = None
    for name in run["samples"]:
        g = int(name.removeprefix("step_").removesuffix(".png"))
        t = float(np.interp(g, [0] + steps, [0.0] + times))
        if best is None or abs(t - target) < abs(best[1] - target):
            best = (name, t)
    return best


def plot_samples(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """A grid of sample images: one row per constraint, one column per seed, each the sample
    closest to a common training time (the shortest run's end, so every run reached it)."""
    plt = pyplot()
    axis = results.get("time_axis", "wall_time")
    ok = [r for r in results["runs"] if r.get("ok") and r.get("samples")]
    if not ok:
        return {}
    ends = [r["final"].get(axis) for r in ok if r["final"].get(axis) is not None]
    if not ends:
        return {}
    target = min(ends)
    cons, seeds = results["constraints"], results["seeds"]
    fig, axes = plt.subplots(len(cons), len(seeds), squeeze=False, dpi=90,
                             figsize=(max(2.6 * len(seeds), 5.0), 2.6 * len(cons)))
    picked: dict[str, Any] = {}
    for i, c in enumerate(cons):
        for j, s in enumerate(seeds):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            run = next((r for r in ok if r["constraint"] == c and r["seed"] == s), None)
            hit = sample_at_time(run, axis, target) if run else None
            if hit is None:
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
            else:
                img = plt.imread(out / run["run_dir"] / "samples" / hit[0])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
                ax.set_xlabel(f"{int(hit[0][5:-4])}"
                              f" G-steps, {hit[1]:.0f} s", fontsize=7)
                picked[run["name"]] = {"file": hit[0], axis: hit[1]}
            if j == 0:
                ax.set_ylabel(c, fontsize=9)
            if i == 0:
                ax.set_title(f"seed {s}", fontsize=9)
    label = "CPU" if axis == "cpu_time" else "wall"
    fig.suptitle(f"samples closest to {target:.0f} s of training {label} time", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "plots" / "samples.png")
    plt.close(fig)
    note = (f"Each image is the run's sample grid closest to {target:.0f} s of training "
            f"{label} time (the shortest run's end); its generator step and time are under it. "
            "Samples are written every `train.sample_every` generator steps, so the match is "
            "only as close as that interval.")
    return {"samples": "plots/samples.png", "samples_target": target, "samples_picked": picked,
            "samples_note": note}
