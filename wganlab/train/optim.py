"""Optimizers from config, with the constraint's literature default when the config says auto."""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..config import OptimizerConfig


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
            "weight_decay": cfg.weight_decay}


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: dict[str, Any]) -> torch.optim.Optimizer:
    params = list(params)
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
