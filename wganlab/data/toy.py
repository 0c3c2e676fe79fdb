"""2-D toy distributions, sampled on the fly (the WGAN-GP paper's test beds)."""
from __future__ import annotations

import math

import torch


def mixture_centers(name: str) -> torch.Tensor:
    """Mode centres of the Gaussian mixtures (8 on a circle of radius 2; a 5x5 grid)."""
    if name == "8gaussians":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return 2.0 * torch.stack([angles.cos(), angles.sin()], 1)
    if name == "25gaussians":
        g = torch.arange(-2, 3, dtype=torch.float64)
        return torch.cartesian_prod(g, g).flip(1) * 1.0
    raise ValueError(f"{name} is not a Gaussian mixture")


def sample_toy(name: str, n: int, generator: torch.Generator, std: float = 0.02) -> torch.Tensor:
    """``n`` points (n, 2) float32 of a named toy distribution."""
    if name in ("8gaussians", "25gaussians"):
        centers = mixture_centers(name)
        idx = torch.randint(len(centers), (n,), generator=generator)
        scale = 1.0 if name == "8gaussians" else 1.0
        pts = centers[idx] * scale + std * torch.randn(n, 2, generator=generator,
                                                        dtype=torch.float64)
        return pts.float()
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        pts = torch.stack([t * t.cos(), t * t.sin()], 1) / 7.5
        pts = pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return pts.float()
    if name == "checkerboard":
        x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
        x2 = (torch.rand(n, generator=generator, dtype=torch.float64)
              - torch.randint(2, (n,), generator=generator).double() * 2)
        x2 = x2 + torch.floor(x1) % 2
        return torch.stack([x1, x2], 1).float()
    raise ValueError(f"unknown toy distribution {name!r}")
