"""The generator/critic pairs: Table I MLP, Table II DCGAN, and toy MLPs for 2-D data.

Every critic returns (N, 1); every generator maps z of shape (N, z_dim) to a sample of the
data's shape ((N, C, S, S) images in [-1, 1], C the data set's channels, or (N, 2) points).
"""
from __future__ import annotations

from torch import nn

from ..config import DataConfig, ModelConfig
from ..plugins import data_spec
from .activations import ACTIVATIONS, GroupSort, make_activation
from .dcgan import dcgan_critic, dcgan_generator
from .mlp import mlp_critic, mlp_generator
from .toy import toy_critic, toy_generator

__all__ = ["build_models", "ACTIVATIONS", "GroupSort", "make_activation", "mlp_critic", "mlp_generator", "dcgan_critic", "dcgan_generator",
           "toy_critic", "toy_generator"]


def build_models(model: ModelConfig, data: DataConfig,
                 activation: str | None = None) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) for a model config, sized for the data config. ``activation``
    (default ``model.activation``) is the critic's: ``auto`` keeps the architecture's own."""
    act = model.activation if activation is None else activation
    spec = data_spec(data.name)
    if model.name == "toy":
        if not spec.toy:
            raise ValueError(f"model.name=toy needs 2-D toy data, not data.name={data.name}")
        return (toy_generator(model.z_dim, 2, model.toy_hidden, model.toy_layers),
                toy_critic(2, model.toy_hidden, model.toy_layers, act))
    if model.name == "mlp":
        return (mlp_generator(model.z_dim, data.image_size, spec.channels, model.bn_eps),
                mlp_critic(data.image_size, spec.channels, model.leaky_slope, act))
    if model.name == "dcgan":
        if data.image_size != 32:
            raise ValueError("model.name=dcgan is built for 32x32 images (data.image_size=32)")
        return (dcgan_generator(model.z_dim, spec.channels),
                dcgan_critic(spec.channels, model.leaky_slope, act))
    raise ValueError(f"unknown model {model.name!r}")
