"""Optimizers from config, with the constraint's literature default when the config says auto."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..config import OptimizerConfig
from ..rescale.layers import weight_layers


def resolve_optimizer(cfg: OptimizerConfig, default: dict[str, Any]) -> dict[str, Any]:
    """Concrete optimizer settings: the config's, falling back on the constraint's default."""
    name = default.get("name", "rmsprop") if cfg.name == "auto" else cfg.name
    same_family = name == default.get("name")
    lr = cfg.lr if cfg.lr is not None else (default.get("lr") if same_family else None)
    if lr is None:
        lr = {"rmsprop": 5e-5, "adam": 1e-4, "sgd": 1e-3}[name]
    betas = cfg.betas if cfg.betas is not None else (
        default.get("betas", [0.5, 0.9]) if same_family else [0.5, 0.9])
    return {"name": name, "lr": float(lr), "betas": [float(b) for b in betas],
            "momentum": cfg.momentum, "rms_alpha": cfg.rms_alpha, "eps": cfg.eps,
            "weight_decay": cfg.weight_decay, "layer_lr": cfg.layer_lr}


def param_groups(net: nn.Module, lr: float, layer_lr: Optional[list[float]]) -> list[dict]:
    """One group per Linear/Conv layer (weight and bias) at lr * its multiplier, one for the
    rest at lr. Per-layer rates let plain clipping mimic what a per-unit rescaling does to
    RMSProp's steps (a layer scaled by s moves s times as far), a control for invclip."""
    if layer_lr is None:
        return [{"params": list(net.parameters()), "lr": lr}]
    layers = weight_layers(net)
    if len(layer_lr) != len(layers):
        raise ValueError(f"layer_lr has {len(layer_lr)} multipliers but the network has "
                         f"{len(layers)} Linear/Conv layers: give one per layer")
    groups, taken = [], set()
    for (_, layer), m in zip(layers, layer_lr):
        ps = [p for p in layer.parameters() if id(p) not in taken]
        taken.update(map(id, ps))
        groups.append({"params": ps, "lr": lr * m})
    rest = [p for p in net.parameters() if id(p) not in taken]
    return groups + ([{"params": rest, "lr": lr}] if rest else [])


def make_optimizer(net: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    params = param_groups(net, spec["lr"], spec.get("layer_lr"))
    if spec["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=spec["lr"], alpha=spec["rms_alpha"],
                                   eps=spec["eps"], momentum=spec["momentum"],
                                   weight_decay=spec["weight_decay"])
    if spec["name"] == "adam":
        return torch.optim.Adam(params, lr=spec["lr"], betas=tuple(spec["betas"]),
                                eps=spec["eps"], weight_decay=spec["weight_decay"])
    if spec["name"] == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"],
                               weight_decay=spec["weight_decay"])
    raise ValueError(f"unknown optimizer {spec['name']!r}")
