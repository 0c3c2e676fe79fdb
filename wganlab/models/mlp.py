"""Table I of Massart 2022: the MLP critic and generator for 32x32 images."""
from __future__ import annotations

from torch import nn

from .activations import make_activation


def mlp_critic(image_size: int = 32, channels: int = 1, slope: float = 0.2,
               activation: str = "auto") -> nn.Sequential:
    """Linear(S*S, 512) LReLU Linear(512, 256) LReLU Linear(256, 1); biases fixed to zero
    (bias=False), as Table I prescribes. ``activation`` replaces the LeakyReLU (``auto``
    keeps it)."""
    def act() -> nn.Module:
        return make_activation(activation, "leaky_relu", slope)

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * image_size * image_size, 512, bias=False), act(),
        nn.Linear(512, 256, bias=False), act(),
        nn.Linear(256, 1, bias=False),
    )


def mlp_generator(z_dim: int = 100, image_size: int = 32, channels: int = 1,
                  bn_eps: float = 0.8) -> nn.Sequential:
    """Linear(z,128) ReLU, [Linear BN ReLU] x 3 up to 1024, Linear(1024, S*S) Tanh.

    Table I prints a 28x28 output but feeds the critic 32x32 (MNIST padded by 2), so the
    output here is ``image_size``. Its "Batchnorm (param. 0.8)" comes from a popular code base
    where 0.8 lands in BatchNorm1d's *eps* argument; we do the same (``bn_eps``).
    """
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Linear(i, o), nn.BatchNorm1d(o, eps=bn_eps), nn.ReLU()]

    return nn.Sequential(
        nn.Linear(z_dim, 128), nn.ReLU(),
        *block(128, 256), *block(256, 512), *block(512, 1024),
        nn.Linear(1024, channels * image_size * image_size), nn.Tanh(),
        nn.Unflatten(1, (channels, image_size, image_size)),
    )
