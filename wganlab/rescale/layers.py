"""Which critic layers carry weights, and the clipping box of each."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def weight_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv layers of ``module`` in registration (= forward, for Sequential) order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def fan_in(layer: nn.Module) -> int:
    w = _weight(layer)
    return int(w[0].numel())


def _weight(layer: nn.Module) -> torch.Tensor:
    # a spectral-normalised layer keeps the raw weight under parametrizations
    p = getattr(layer, "parametrizations", None)
    if p is not None and "weight" in p:
        return p.weight.original
    return layer.weight


def layer_bounds(module: nn.Module, clip: Union[float, Sequence[float]],
                 scale: str = "absolute") -> list[float]:
    """One clip bound per weight layer: ``clip`` itself, or ``clip / sqrt(fan_in)``.

    ``clip`` is a float for every layer or a list with one entry per Linear/Conv layer.
    """
    layers = weight_layers(module)
    if not layers:
        raise ValueError("the critic has no Linear or Conv layer to clip")
    if isinstance(clip, (int, float)):
        clips = [float(clip)] * len(layers)
    else:
        clips = [float(c) for c in clip]
        if len(clips) != len(layers):
            names = ", ".join(n for n, _ in layers)
            raise ValueError(f"clip has {len(clips)} values but the critic has {len(layers)} "
                             f"Linear/Conv layers ({names}): give one value per layer or a float")
    if any(c <= 0 for c in clips):
        raise ValueError(f"clip values must be > 0, got {clips}")
    if scale == "fan_in":
        clips = [c / math.sqrt(fan_in(m)) for c, (_, m) in zip(clips, layers)]
    elif scale != "absolute":
        raise ValueError(f"clip scale must be 'absolute' or 'fan_in', got {scale!r}")
    return clips
