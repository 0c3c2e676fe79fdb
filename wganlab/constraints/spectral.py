"""Spectral normalisation (Miyato et al. 2018) through PyTorch's own parametrisation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ..rescale.layers import weight_layers
from .base import Constraint
from .registry import register


def _sn_module(layer: nn.Module) -> Optional[nn.Module]:
    """The ``_SpectralNorm`` parametrisation on ``layer.weight``, if there is one."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    for p in layer.parametrizations.weight:
        if hasattr(p, "_u") and hasattr(p, "_v"):
            return p
    return None


class SpectralNorm(Constraint):
    """Divide every Linear/Conv critic weight by its largest singular value, estimated by power
    iteration (``n_power_iterations`` per training-mode forward pass).

    Applied **in place** when built, with ``torch.nn.utils.parametrizations.spectral_norm``: the
    raw weight stays the same ``Parameter`` (now ``layer.parametrizations.weight.original``), so
    an optimizer built before or after keeps working, and the power-iteration vectors ``_u``,
    ``_v`` are buffers in the critic's own ``state_dict`` (build the constraint before loading a
    checkpoint into the critic). PyTorch normalises the weight reshaped to ``[out, -1]``; for a
    conv that matrix's norm is not the conv operator's norm (see
    ``wganlab.metrics.lipschitz``), so an SN conv critic is only approximately 1-Lipschitz.
    Layers already spectrally normalised are left as they are.

    Default optimizer: Adam lr 2e-4, betas (0.5, 0.999), setting C of Miyato et al.'s Table 1
    (where SN-GAN scored well; their setting A is WGAN-GP's 1e-4, (0.5, 0.9)).
    Diagnostics (on ``step(diagnose=True)``): ``sn/raw_sigma_max`` and ``sn/raw_sigma_min``,
    the current power-iteration estimates of the raw weights' largest singular values.
    """

    name = "sn"
    default_optimizer = {"name": "adam", "lr": 2e-4, "betas": (0.5, 0.999)}

    def __init__(self, critic: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__(critic)
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        layers = weight_layers(critic)
        if not layers:
            raise ValueError("the critic has no Linear or Conv layer to spectrally normalise")
        self.n_power_iterations = n_power_iterations
        self.layers: list[nn.Module] = []
        for _, layer in layers:
            if _sn_module(layer) is None:
                spectral_norm(layer, n_power_iterations=n_power_iterations, eps=eps)
            self.layers.append(layer)

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None, *,
             diagnose: bool = False) -> None:
        if not diagnose:
            return
        sigmas = []
        for layer in self.layers:
            sn = _sn_module(layer)
            w = sn._reshape_weight_to_matrix(layer.parametrizations.weight.original)
            sigmas.append(torch.vdot(sn._u, torch.mv(w, sn._v)))
        s = torch.stack(sigmas)
        self._diagnostics = {"sn/raw_sigma_max": float(s.max()),
                             "sn/raw_sigma_min": float(s.min())}

    def __repr__(self) -> str:
        return (f"SpectralNorm(layers={len(self.layers)}, "
                f"n_power_iterations={self.n_power_iterations})")


@dataclass
class SpectralParams:
    """``constraint.sn``: power iterations per forward pass."""
    power_iterations: int = 1

    def validate(self) -> None:
        if self.power_iterations < 1:
            raise ValueError(f"power_iterations must be > 0 (got {self.power_iterations})")


@register("sn", params=SpectralParams, capabilities=("reparametrises",))
def _build(critic: nn.Module, section) -> SpectralNorm:
    return SpectralNorm(critic, section.params("sn").power_iterations)
