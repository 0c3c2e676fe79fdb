"""Table II of Massart 2022: the DCGAN critic and generator for 32x32 images."""
from __future__ import annotations

from torch import nn

from .activations import make_activation


def dcgan_critic(channels: int = 1, slope: float = 0.2, activation: str = "auto") -> nn.Sequential:
    """Conv(1,64,4,2,1) LReLU Conv(64,128,4,2,1) LReLU Conv(128,256,4,2,1) LReLU
    Conv(256,1,4,1,0); no batch norm. 32 -> 16 -> 8 -> 4 -> 1. ``activation`` replaces the
    LeakyReLU (``auto`` keeps it; GroupSort sorts channel pairs)."""
    def act() -> nn.Module:
        return make_activation(activation, "leaky_relu", slope)

    return nn.Sequential(
        nn.Conv2d(channels, 64, 4, 2, 1), act(),
        nn.Conv2d(64, 128, 4, 2, 1), act(),
        nn.Conv2d(128, 256, 4, 2, 1), act(),
        nn.Conv2d(256, 1, 4, 1, 0),
        nn.Flatten(),
    )


def dcgan_generator(z_dim: int = 100, channels: int = 1) -> nn.Sequential:
    """ConvT(z,512,4,1,0) BN ReLU, ConvT(512,256) BN ReLU, ConvT(256,128) BN ReLU,
    ConvT(128, channels) Tanh: 1 -> 4 -> 8 -> 16 -> 32.

    Table II prints the last layer as ConvT(128, 64, 4, 2, 1), which would emit a 64-channel
    image; a 1-channel 32x32 digit needs ConvT(128, 1, 4, 2, 1), which is what we build.
    """
    def block(i: int, o: int, k_s_p: tuple[int, int, int]) -> list[nn.Module]:
        return [nn.ConvTranspose2d(i, o, *k_s_p, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(
        nn.Unflatten(1, (z_dim, 1, 1)),
        *block(z_dim, 512, (4, 1, 0)), *block(512, 256, (4, 2, 1)), *block(256, 128, (4, 2, 1)),
        nn.ConvTranspose2d(128, channels, 4, 2, 1), nn.Tanh(),
    )
