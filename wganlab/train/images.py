"""Pictures a person looks at during training: sample grids and toy scatter plots."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..plotting import pyplot


def image_grid(images: torch.Tensor, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows*H, cols*W[, C]) array in [0, 1], nearly square."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for k in range(n):  # at most a few hundred tiles, once per sample interval
        r, q = divmod(k, cols)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + q * (w + pad): pad + q * (w + pad) + w] = x[k]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[..., 0] if c == 1 else arr


def save_image_grid(images: torch.Tensor, path: Path) -> None:
    plt = pyplot()
    arr = image_grid(images)
    plt.imsave(path, arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)


def save_toy_scatter(real: torch.Tensor, fake: torch.Tensor, path: Path, title: str = "") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    r, f = real.detach().cpu().numpy(), fake.detach().cpu().numpy()
    ax.scatter(r[:, 0], r[:, 1], s=2, c="tab:orange", alpha=0.5, label="real")
    ax.scatter(f[:, 0], f[:, 1], s=2, c="tab:blue", alpha=0.5, label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
