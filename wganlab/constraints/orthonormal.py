"""Critics that are 1-Lipschitz by construction: every weight layer is reparametrised so that
its operator norm is at most 1, whatever the raw parameters are.

- ``bjorck`` (Anil, Lucas & Grosse 2019): each dense weight is replaced by its Björck &
  Bowie (1971) orthonormalisation -- all singular values (of the smaller side) driven to 1 --
  so that, with GroupSort activations, the critic preserves gradient norms and can reach the
  slope-1 optimum of the Kantorovich-Rubinstein dual that clipping and ReLU critics miss.
- ``aol`` (Prach & Lampert 2022): each weight's input side is rescaled by
  D = diag(sum_j |W^T W|_ij)^(-1/2), which bounds ||W D|| <= 1 in one cheap, exact step; for
  convolutions the same rescaling on the kernel's self-correlation bounds the conv operator.

Both reparametrise the critic in place with ``torch.nn.utils.parametrize`` (as ``sn`` does), so
the raw weights stay the optimizer's parameters and the bound holds after every step: there is
nothing to project. Biases do not change a Lipschitz constant and are left alone. Convolutions
get the AOL rescaling under both names (Björck on a reshaped kernel does not make the conv
operator orthogonal). The critic activation these are built for is GroupSort
(``model.activation: auto`` takes it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..rescale.layers import weight_layers
from .base import Constraint
from .registry import register

_EPS = 1e-12
_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


# ----------------------------------------------------------------------------- the maths

def bjorck(w: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """The nearest (semi-)orthonormal matrix to ``w`` by Björck & Bowie's first-order iteration
    W <- W (1.5 I - 0.5 W^T W), after dividing ``w`` by :func:`_prescale`.

    Each singular value s in [0, sqrt(3)) maps to 1.5 s - 0.5 s^3 <= 1, which then rises
    towards 1 and never exceeds it, so the result has norm <= 1 after any number (>= 1) of
    iterations, up to rounding; more iterations only make it tighter (orthonormal)."""
    w = w / _prescale(w)
    tall = w.shape[0] >= w.shape[1]
    for _ in range(iters):
        w = 1.5 * w - 0.5 * (w @ (w.T @ w) if tall else (w @ w.T) @ w)
    return w


@torch.no_grad()
def _prescale(w: torch.Tensor, power_iterations: int = 6) -> torch.Tensor:
    """A divisor that puts sigma_max(w) in (0, 1.5]: the larger of a power-iteration estimate
    of sigma_max (from below; tight, so small singular values start high and few iterations
    are needed) and sqrt(||W||_1 ||W||_inf) / 1.5 (sigma_max <= that bound: the guarantee).
    Detached: the iteration's fixed point (the polar factor) does not depend on it."""
    a = w.abs()
    bound = torch.sqrt(a.sum(0).max() * a.sum(1).max())
    v = a.sum(0)  # a start with weight on every column
    for _ in range(power_iterations):
        v = w.T @ (w @ v)
        v = v / v.norm().clamp_min(_EPS)
    return torch.maximum((w @ v).norm(), bound / 1.5).clamp_min(_EPS)


def aol_scale(w: torch.Tensor) -> torch.Tensor:
    """Prach & Lampert's input-side rescaling d_i = (sum_j |W^T W|_ij)^(-1/2) of a dense
    weight (out, in), or of a conv kernel (out, in, *k) from its self-correlation over all
    shifts (the kernel of the conv operator's A^T A), so that ||A diag(d)|| <= 1."""
    if w.dim() == 2:
        gram = (w.T @ w).abs()
    else:
        k = w.transpose(0, 1)  # (in, out, *k): each input channel's stack of filters
        gram = _CONV_FNS[w.dim() - 2](k, k, padding=[s - 1 for s in w.shape[2:]]).abs()
    return gram.flatten(1).sum(1).clamp_min(_EPS).rsqrt()


def aol(w: torch.Tensor) -> torch.Tensor:
    """``w`` with its input side rescaled by :func:`aol_scale`: operator norm <= 1."""
    d = aol_scale(w)
    return w * d.reshape((1, -1) + (1,) * (w.dim() - 2))


class _Bjorck(nn.Module):
    def __init__(self, iters: int):
        super().__init__()
        self.iters = iters

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return bjorck(w, self.iters)


class _AOL(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return aol(w)


# ----------------------------------------------------------------------------- the constraints

class _ByConstruction(Constraint):
    """Reparametrise every Linear/Conv weight of the critic in place; diagnose the result.

    Diagnostics (``step(diagnose=True)``), per dense layer (its index among the weight
    layers): ``<name>/sigma_max_<i>`` the largest singular value of the weight it uses (<= 1
    by construction), and ``<name>/sigma_max`` / ``<name>/sigma_min`` over all dense layers
    (sigma_min near 1: orthonormal, gradient norm preserved).
    """

    default_optimizer = {"name": "adam", "lr": 1e-4, "betas": (0.5, 0.9)}

    def __init__(self, critic: nn.Module, dense: Callable[[], nn.Module]):
        super().__init__(critic)
        layers = weight_layers(critic)
        if not layers:
            raise ValueError(f"the critic has no Linear or Conv layer for {self.name} to bound")
        self.layers: list[tuple[int, nn.Module]] = []
        for i, (lname, layer) in enumerate(layers):
            if parametrize.is_parametrized(layer, "weight"):
                raise ValueError(f"critic layer {lname!r} is already reparametrised (sn?): "
                                 f"{self.name} bounds the raw weight itself; use it alone or "
                                 "with a penalty")
            if isinstance(layer, nn.Linear):
                parametrize.register_parametrization(layer, "weight", dense())
                self.layers.append((i, layer))
            else:
                _check_conv(lname, layer, self.name)
                parametrize.register_parametrization(layer, "weight", _AOL())

    @torch.no_grad()
    def step(self, optimizer: Optional[torch.optim.Optimizer] = None, *,
             diagnose: bool = False) -> None:
        if not diagnose or not self.layers:
            return
        out: dict[str, float] = {}
        lo, hi = float("inf"), 0.0
        for i, layer in self.layers:
            s = torch.linalg.svdvals(layer.weight.double())
            out[f"{self.name}/sigma_max_{i}"] = float(s[0])
            hi, lo = max(hi, float(s[0])), min(lo, float(s[-1]))
        out[f"{self.name}/sigma_max"], out[f"{self.name}/sigma_min"] = hi, lo
        self._diagnostics = out


def _check_conv(name: str, layer: nn.Module, constraint: str) -> None:
    """The conv bound is proved for plain zero-padded convolutions: refuse the rest clearly."""
    if layer.groups != 1 or any(d != 1 for d in layer.dilation) or layer.padding_mode != "zeros":
        raise ValueError(f"{constraint} bounds plain convolutions (groups=1, dilation=1, zero "
                         f"padding); critic layer {name!r} has groups={layer.groups}, "
                         f"dilation={layer.dilation}, padding_mode={layer.padding_mode!r}")


class Bjorck(_ByConstruction):
    """Dense weights orthonormalised by ``iters`` Björck iterations per forward pass (the
    iterations are differentiated through); convolutions AOL-rescaled."""

    name = "bjorck"

    def __init__(self, critic: nn.Module, iters: int = 20):
        if iters < 1:
            raise ValueError(f"bjorck needs iters >= 1 (got {iters})")
        self.iters = iters
        super().__init__(critic, lambda: _Bjorck(iters))

    def __repr__(self) -> str:
        return f"Bjorck(layers={len(self.layers)}, iters={self.iters})"


class AOL(_ByConstruction):
    """Almost-orthogonal layers: every weight rescaled on its input side (dense and conv)."""

    name = "aol"

    def __init__(self, critic: nn.Module):
        super().__init__(critic, _AOL)

    def __repr__(self) -> str:
        return f"AOL(layers={len(self.layers)})"


@dataclass
class BjorckParams:
    """``constraint.bjorck``: orthonormalisation iterations per forward pass (two matrix
    products each; 20 lift a singular value of 1e-3 of the pre-scaled weight to 1 within 1e-4,
    15 one of 1e-2)."""
    iters: int = 20

    def validate(self) -> None:
        if self.iters < 1:
            raise ValueError(f"iters must be > 0 (got {self.iters})")


@register("bjorck", params=BjorckParams, capabilities=("reparametrises",),
          activation="groupsort")
def _build_bjorck(critic: nn.Module, section) -> Bjorck:
    return Bjorck(critic, section.params("bjorck").iters)


@register("aol", capabilities=("reparametrises",), activation="groupsort")
def _build_aol(critic: nn.Module, cfg) -> AOL:
    return AOL(critic)
