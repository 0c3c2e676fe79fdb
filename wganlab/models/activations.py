"""Critic activations, chosen by ``model.activation``.

GroupSort (Anil, Lucas & Grosse 2019) sorts each group of units: it is 1-Lipschitz and, unlike
(Leaky)ReLU, *gradient-norm preserving* (its Jacobian is a permutation), which is what lets a
network of orthonormal layers reach slope 1 everywhere and so the Kantorovich-Rubinstein
optimum. ``auto`` keeps each architecture's own activation unless the constraint asks for
another (``bjorck`` and ``aol`` ask for GroupSort; see ``wganlab.constraints.registry``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ACTIVATIONS


class GroupSort(nn.Module):
    """Sort consecutive groups of ``group_size`` units along dim 1 (features of a Linear,
    channels of a conv), ascending within each group."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        if group_size < 2:
            raise ValueError(f"GroupSort needs group_size >= 2 (got {group_size})")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = x.shape[1]
        if units % self.group_size:
            raise ValueError(f"GroupSort({self.group_size}) needs a unit count divisible by "
                             f"{self.group_size}, got {units}: use an even layer width")
        groups = x.unflatten(1, (units // self.group_size, self.group_size))
        return groups.sort(dim=2).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def make_activation(name: str, default: str, slope: float = 0.2) -> nn.Module:
    """The activation module for ``name``; ``auto`` means the architecture's ``default``."""
    name = default if name == "auto" else name
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "relu":
        return nn.ReLU()
    if name == "groupsort":
        return GroupSort(2)
    raise ValueError(f"model.activation={name!r} is not one of: {', '.join(ACTIVATIONS)}")
