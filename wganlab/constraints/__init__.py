"""Lipschitz strategies for the critic, each a small object behind one interface."""
from .base import Compose, Constraint
from .clip import WeightClip
from .invariant import InvariantClip
from .penalty import (AdaptiveGradientPenalty, GradientPenalty, LipschitzPenalty,
                      R1Penalty)
from .spectral import SpectralNorm
from .registry import available, build_constraint, register

__all__ = ["Constraint", "Compose", "WeightClip", "InvariantClip", "GradientPenalty", "LipschitzPenalty",
           "AdaptiveGradientPenalty", "R1Penalty", "SpectralNorm", "available", "build_constraint",
           "register"]
