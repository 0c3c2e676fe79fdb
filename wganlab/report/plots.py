"""``wganlab plot``: metric curves of one or more runs, and for toy runs real vs generated
points over the critic's contour."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..plotting import pyplot
from ..plugins import data_spec
from ..metrics.meta import reference_key
from ..metrics.records import read_metrics
from .evaluate import RunError, load_net, load_run_config
from .keys import hidden

#: x axes of the curves
X_AXES = (("generator_step", "generator step"), ("wall_time", "wall time (s)"))
#: record keys that are not metrics
NOT_METRICS = {"generator_step", "critic_step", "wall_time", "cpu_time", "epoch"}
#: reference keys of metrics whose reference is not ``<key>_ref``


def load_records(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunError(f"{run_dir} has no metrics.jsonl")
    records = read_metrics(path)
    if not records:
        raise RunError(f"nothing to plot: {path} holds no records")
    return records


def _label(run_dir: Path) -> str:
    try:
        return f"{run_dir.name} ({load_run_config(run_dir).constraint.name})"
    except RunError:
        return run_dir.name


def metric_keys(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Numeric series worth a curve, the W estimate and losses first, then eval/ keys."""
    keys: dict[str, None] = {}
    for records in runs.values():
        for r in records:
            for k, v in r.items():
                if (k not in NOT_METRICS and not hidden(k)
                        and isinstance(v, (int, float)) and not isinstance(v, bool)):
                    keys[k] = None
    return sorted(keys, key=lambda k: (k.startswith("eval/"), k))


def _series(records: list[dict[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[x], r[y]) for r in records if isinstance(r.get(x), (int, float))
           and isinstance(r.get(y), (int, float)) and math.isfinite(r[y])]
    arr = np.asarray(pts, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def plot_curves(run_dirs: list[str | Path], out_dir: str | Path,
                keys: Optional[list[str]] = None) -> list[Path]:
    """One PNG per metric with two panels (vs generator step, vs wall time), one line per run,
    the real-data reference dashed. Returns the files written."""
    plt = pyplot()
    dirs = [Path(d) for d in run_dirs]
    runs = {_label(d): load_records(d) for d in dirs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys or metric_keys(runs):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100, sharey=True)
        drawn = False
        ref_key = reference_key(key)
        refs = {label: r[-1] for label, rec in runs.items()
                if len(r := _series(rec, "generator_step", ref_key)[1])}
        shared = len(set(refs.values())) == 1  # one data set: one reference line
        for i, (label, records) in enumerate(runs.items()):
            color = f"C{i % 10}"
            for ax, (x, _) in zip(axes, X_AXES):
                xs, ys = _series(records, x, key)
                if len(xs):
                    ax.plot(xs, ys, color=color, lw=1.2, marker="." if len(xs) < 30 else None,
                            label=label)
                    drawn = True
                if label in refs and not (shared and label != next(iter(refs))):
                    ax.axhline(refs[label], color="0.4" if shared else color, ls="--", lw=0.9,
                               label=None if ax is not axes[0] else
                               "real data" if shared else f"{label}: real data")
        if not drawn:
            plt.close(fig)
            continue
        positive = all((_series(r, "generator_step", key)[1] > 0).all() for r in runs.values())
        values = np.concatenate([_series(r, "generator_step", key)[1] for r in runs.values()])
        if positive and len(values) and values.max() / max(values.min(), 1e-300) > 50:
            axes[0].set_yscale("log")
        for ax, (_, name) in zip(axes, X_AXES):
            ax.set_xlabel(name)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(key)
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(key, fontsize=10)
        fig.tight_layout()
        path = out_dir / (key.replace("/", "_") + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


@torch.no_grad()
def plot_toy(run_dir: str | Path, out: str | Path, checkpoint: str | Path | None = None,
             n: int = 1000, grid: int = 150, seed: int = 0) -> Path:
    """Real vs generated points of a toy run over filled contours of the critic's output."""
    from ..data import sample_toy
    plt = pyplot()
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if not data_spec(cfg.data.name).toy:
        raise RunError(f"{run_dir} trains on {cfg.data.name}, not on 2-D toy data")
    generator = load_net(run_dir, cfg, "generator", checkpoint)
    critic = load_net(run_dir, cfg, "critic", checkpoint)
    g = torch.Generator().manual_seed(seed)
    real = sample_toy(cfg.data.name, n, g, cfg.data.toy_std)
    fake = generator(torch.randn(n, cfg.model.z_dim, generator=g)).float()
    pts = torch.cat([real, fake[torch.isfinite(fake).all(1)]])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.15 * (hi - lo).clamp_min(0.5)
    lo, hi = (lo - pad).clamp_min(-50).tolist(), (hi + pad).clamp_max(50).tolist()
    xs, ys = torch.linspace(lo[0], hi[0], grid), torch.linspace(lo[1], hi[1], grid)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    values = critic(torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(grid, grid)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    cs = ax.contourf(xx.numpy(), yy.numpy(), values.numpy(), levels=20, cmap="RdBu_r", alpha=0.6)
    ax.contour(xx.numpy(), yy.numpy(), values.numpy(), levels=10, colors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="critic output")
    real, fake = real.numpy(), fake.numpy()
    ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.6, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:green", alpha=0.6, label="generated")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=7)
    ax.set_title(f"{run_dir.name}: {cfg.data.name}, {cfg.constraint.name}", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def run_plot(run_dirs: list[str | Path], out: str | Path | None = None,
             checkpoint: str | Path | None = None) -> list[Path]:
    """``wganlab plot``: curves of all runs (in ``out``; default ``RUN/plots`` for one run,
    ``./plots`` for several) and, per toy run with final weights, its critic contour plot."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise RunError("plot needs at least one run directory")
    out_dir = Path(out) if out is not None else (dirs[0] / "plots" if len(dirs) == 1
                                                 else Path("plots"))
    written = plot_curves(dirs, out_dir)
    if not written:
        raise RunError(f"nothing to plot: the metrics.jsonl of {', '.join(map(str, dirs))} "
                       "hold no numeric metric")
    for d in dirs:
        cfg = load_run_config(d)
        has_weights = checkpoint is not None or (d / "critic.safetensors").is_file()
        if data_spec(cfg.data.name).toy and has_weights:
            name = "toy.png" if len(dirs) == 1 else f"toy-{d.name}.png"
            written.append(plot_toy(d, out_dir / name, checkpoint))
    return written
