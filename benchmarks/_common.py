"""Shared pieces of the projection benchmarks: data, Table I/II models, one critic step."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from wganlab.config import DataConfig, ModelConfig
from wganlab.models import build_models

MNIST = Path(os.environ.get("WGANLAB_MNIST",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
#: seed 001's clipping bounds
BOUNDS = {"mlp": [0.035, 0.045, 0.0625], "dcgan": [0.05, 0.008, 0.006, 0.004]}


def mnist_images() -> torch.Tensor:
    """Full MNIST training images, (60000, 1, 32, 32) in [-1, 1] (padded by 2)."""
    from wganlab.data import load_images
    return load_images(DataConfig(name="mnist", dir=str(MNIST), batch_size=128), "train").images


def models(name: str) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) of Table I (mlp) or Table II (dcgan)."""
    return build_models(ModelConfig(name=name), DataConfig(name="mnist", dir=str(MNIST)))


def critic_step(G: nn.Module, C: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                z_dim: int = 100) -> torch.Tensor:
    """One WGAN critic step (generator forward included); returns the critic's batch."""
    with torch.no_grad():
        fake = G(torch.randn(real.shape[0], z_dim))
    loss = -(C(real).mean() - C(fake).mean())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.cat([real, fake])


def generator_step(G: nn.Module, C: nn.Module, opt: torch.optim.Optimizer, n: int,
                   z_dim: int = 100) -> None:
    loss = -C(G(torch.randn(n, z_dim))).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def box_distance(targets) -> float:
    """Euclidean distance of the clipped parameters to their box (eq. 7's norm)."""
    return sum(float((p.detach().abs() - b).clamp_min(0).double().square().sum())
               for _, p, b in targets) ** 0.5
