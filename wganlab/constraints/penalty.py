"""Gradient penalties on the critic: WGAN-GP (``gp``), WGAN-LP (``lp``), R1 (``r1``) and the
dynamically weighted GP of Anon. 2025 (the unsigned article "How can Wasserstein GAN critic
training be made unambiguous?") (``gp-adaptive``).

The maths are small pure functions: the three per-sample terms here, and the sampling and
gradient helpers (``interpolate``, ``input_grads``, ``grad_norms``, with the eps inside the
sqrt) shared with ``wganlab.metrics.lipschitz``, so a penalty and its diagnostic measure the
same thing. The classes are thin :class:`Constraint` wrappers that pick the
points, apply the weight and record diagnostics. All penalties are per sample: one mixing
factor and one gradient norm per sample, whatever the data's shape (2-D points, images with
any number of channels). They assume the critic treats samples independently (no batch norm in
training mode: it couples the samples, which is why WGAN-GP recommends layer norm instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..metrics.lipschitz import grad_norms, input_grads, interpolate
from .base import Constraint
from .registry import register

#: WGAN-GP's critic optimizer (Gulrajani et al. 2017, Algorithm 1: alpha 1e-4, beta1 0.5,
#: beta2 0.9); WGAN-LP (Petzka et al. 2018) keeps the same settings
GP_OPTIMIZER = {"name": "adam", "lr": 1e-4, "betas": (0.5, 0.9)}


# ----------------------------------------------------------------------------- pure maths

def two_sided(norms: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: ``E[(||g|| - 1)^2]`` (unweighted)."""
    return (norms - 1).pow(2).mean()


def one_sided(norms: torch.Tensor) -> torch.Tensor:
    """WGAN-LP: ``E[max(0, ||g|| - 1)^2]`` (unweighted): only slopes above 1 are penalised."""
    return torch.relu(norms - 1).pow(2).mean()


def squared_norm(grads: torch.Tensor) -> torch.Tensor:
    """R1's ``E||g||^2`` (unweighted, without the 1/2); squared directly, so no sqrt and no eps."""
    return grads.pow(2).sum(dim=1).mean()


def adaptive_weight(value: torch.Tensor, cap: float) -> torch.Tensor:
    """The gp-adaptive weight: ``clamp(value, 0, cap)``, detached (see AdaptiveGradientPenalty)."""
    return value.detach().clamp(0.0, cap)


# ----------------------------------------------------------------------------- objects

class _Penalty(Constraint):
    """Common plumbing: no projection, a penalty, diagnostics recorded lazily.

    Diagnostics are kept as detached tensors and turned into floats only when read, so the
    penalty does not force a device sync every step.
    """

    needs_penalty = True
    default_optimizer = GP_OPTIMIZER

    def _record(self, value: torch.Tensor, weight: torch.Tensor | float,
                norms: torch.Tensor) -> None:
        self._diagnostics = {f"penalty/{self.name}": value.detach(),
                             f"penalty/{self.name}_weight": weight,
                             f"penalty/{self.name}_grad_norm": norms.detach().mean()}

    def diagnostics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._diagnostics.items()}


class GradientPenalty(_Penalty):
    """WGAN-GP (Gulrajani et al. 2017): ``lambda * E[(||grad f(x_hat)|| - 1)^2]`` at random
    interpolates ``x_hat`` between real and fake samples; lambda = 10 in the paper.

    Default optimizer: Adam lr 1e-4, betas (0.5, 0.9), the paper's Algorithm 1.
    Diagnostics: ``penalty/gp`` (the unweighted mean term), ``penalty/gp_weight`` and
    ``penalty/gp_grad_norm`` (mean gradient norm at this step's interpolates).
    """

    name = "gp"

    def __init__(self, critic: nn.Module, weight: float = 10.0):
        super().__init__(critic)
        if weight < 0:
            raise ValueError(f"penalty weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def term(self, norms: torch.Tensor) -> torch.Tensor:
        return two_sided(norms)

    def weigh(self, value: torch.Tensor) -> torch.Tensor | float:
        return self.weight

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        norms = grad_norms(input_grads(self.critic, interpolate(real, fake), create_graph=True))
        value = self.term(norms)
        weight = self.weigh(value)
        self._record(value, weight, norms)
        return weight * value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"


class LipschitzPenalty(GradientPenalty):
    """WGAN-LP (Petzka et al. 2018): ``lambda * E[max(0, ||grad f(x_hat)|| - 1)^2]``.

    One-sided: the constraint is ``Lip(f) <= 1``, so slopes below 1 are not pushed up.
    Same points, weight and optimizer as :class:`GradientPenalty`.
    """

    name = "lp"

    def term(self, norms: torch.Tensor) -> torch.Tensor:
        return one_sided(norms)


class AdaptiveGradientPenalty(GradientPenalty):
    """WGAN-GP with the weight set each step from the measured penalty (Anon. 2025, example 3).

    The rule, precisely: with ``P = E[(||grad f(x_hat)|| - 1)^2]`` measured on this step's
    interpolates, the loss term is ``w * P`` where ``w = clamp(P, 0, max_weight)`` is
    **detached** (a constant for backprop). So the gradient is ``w * dP``: a badly violated
    constraint is pushed back hard (up to ``max_weight``, = ``cfg.adaptive_max``, 10 as in that
    article), a nearly satisfied one is left almost free (``w -> 0`` as ``P -> 0``).

    Why detached: the article's TensorFlow code does not stop the gradient, so there the term is
    ``P^2`` below the cap — a different (quartic in the slope) penalty whose "weight" is not a
    weight. Detaching keeps the term a weighted GP, and the logged ``penalty/gp-adaptive_weight``
    is exactly the factor applied. The lower bound 0 is inert (P >= 0). ``gp_lambda`` is not
    used. Consequence worth knowing: near equilibrium the effective restoring force is
    ``P * dP`` = d(P^2/2), weaker than fixed-lambda GP, so slopes may drift further from 1.
    """

    name = "gp-adaptive"

    def __init__(self, critic: nn.Module, max_weight: float = 10.0):
        super().__init__(critic, weight=max_weight)
        self.max_weight = float(max_weight)

    def weigh(self, value: torch.Tensor) -> torch.Tensor:
        return adaptive_weight(value, self.max_weight)

    def __repr__(self) -> str:
        return f"AdaptiveGradientPenalty(max_weight={self.max_weight})"


class R1Penalty(_Penalty):
    """R1 (Mescheder et al. 2018; Anon. 2025, example 2): ``gamma/2 * E_real ||grad_x f(x)||^2``,
    on real samples only (fakes are ignored).

    Default optimizer: RMSProp lr 1e-4, the setting of the R1 paper's experiments (its
    GAN_stability configs: RMSProp, lr 1e-4, gamma 10). Diagnostics: ``penalty/r1`` (the
    unweighted ``E||g||^2``), ``penalty/r1_weight`` (gamma/2), ``penalty/r1_grad_norm``.
    """

    name = "r1"
    default_optimizer = {"name": "rmsprop", "lr": 1e-4}

    def __init__(self, critic: nn.Module, gamma: float = 10.0):
        super().__init__(critic)
        if gamma < 0:
            raise ValueError(f"r1 gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def penalty(self, real: torch.Tensor, fake: Optional[torch.Tensor] = None) -> torch.Tensor:
        grads = input_grads(self.critic, real, create_graph=True)
        value = squared_norm(grads)
        self._record(value, self.gamma / 2, grad_norms(grads.detach()))
        return (self.gamma / 2) * value

    def __repr__(self) -> str:
        return f"R1Penalty(gamma={self.gamma})"


# ----------------------------------------------------------------------------- registry

def _non_negative(obj, key: str) -> None:
    if getattr(obj, key) < 0:
        raise ValueError(f"{key} must be >= 0 (got {getattr(obj, key)})")


@dataclass
class PenaltyWeight:
    """``constraint.gp`` / ``constraint.lp``: the penalty's weight (WGAN-GP: 10)."""
    weight: float = 10.0

    def validate(self) -> None:
        _non_negative(self, "weight")


@dataclass
class R1Params:
    """``constraint.r1``: gamma of gamma/2 * E||grad f(real)||^2."""
    gamma: float = 10.0

    def validate(self) -> None:
        _non_negative(self, "gamma")


@dataclass
class AdaptiveParams:
    """``constraint.gp-adaptive``: the largest weight the adaptive rule may reach."""
    max_weight: float = 10.0

    def validate(self) -> None:
        _non_negative(self, "max_weight")


_DRAWS = ("penalty", "draws_per_sample")


@register("gp", params=PenaltyWeight, capabilities=_DRAWS)
def _build_gp(critic: nn.Module, section) -> GradientPenalty:
    return GradientPenalty(critic, section.params("gp").weight)


@register("lp", params=PenaltyWeight, capabilities=_DRAWS)
def _build_lp(critic: nn.Module, section) -> LipschitzPenalty:
    return LipschitzPenalty(critic, section.params("lp").weight)


@register("gp-adaptive", params=AdaptiveParams, capabilities=_DRAWS + ("rank_local",))
def _build_gp_adaptive(critic: nn.Module, section) -> AdaptiveGradientPenalty:
    return AdaptiveGradientPenalty(critic, section.params("gp-adaptive").max_weight)


@register("r1", params=R1Params, capabilities=("penalty",))
def _build_r1(critic: nn.Module, section) -> R1Penalty:
    return R1Penalty(critic, section.params("r1").gamma)
