"""Small ReLU MLPs for 2-D toy data (as in the WGAN-GP authors' toy experiments)."""
from __future__ import annotations

from torch import nn

from .activations import make_activation


def _mlp(i: int, hidden: int, layers: int, o: int, activation: str = "relu") -> list[nn.Module]:
    mods: list[nn.Module] = []
    for k in range(layers):
        mods += [nn.Linear(i if k == 0 else hidden, hidden), make_activation(activation, "relu")]
    return mods + [nn.Linear(hidden, o)]


def toy_critic(dim: int = 2, hidden: int = 256, layers: int = 3,
               activation: str = "auto") -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` units; ReLU unless ``activation`` says otherwise."""
    return nn.Sequential(*_mlp(dim, hidden, layers, 1, activation))


def toy_generator(z_dim: int = 2, dim: int = 2, hidden: int = 256, layers: int = 3) -> nn.Sequential:
    return nn.Sequential(*_mlp(z_dim, hidden, layers, dim))
