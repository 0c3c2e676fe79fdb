"""Lipschitz strategies for the critic, each a small object behind one interface."""
from .base import Compose, Constraint
from .clip import WeightClip
from .invariant import InvariantClip
from .penalty import (AdaptiveGradientPenalty, GradientPenalty, LipschitzPenalty,
                      R1Penalty)
from .spectral import SpectralNorm
from .orthonormal import AOL, Bjorck
from .registry import available, build_constraint, critic_activation, has_capability, register

__all__ = ["Constraint", "Compose", "WeightClip", "InvariantClip", "GradientPenalty", "LipschitzPenalty",
           "AdaptiveGradientPenalty", "R1Penalty", "SpectralNorm", "Bjorck", "AOL", "available",
           "build_constraint", "critic_activation", "has_capability", "register"]
